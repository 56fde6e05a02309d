"""Partitioned tables: a Dask DataFrame stored as parquet parts, written and read by the workers themselves.

Each worker writes its partitions straight to storage (the bucket, on S3),
hashing each part as it is written and profiling it, and sends back only the
part's digest, size and statistics; the table is never collected into one
process. A snapshot's id is BLAKE3 over its parts' digests in order, and its
manifest's statistics are the parts' merged. Reading verifies each part
against its digest on the worker that parses it.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from mlops_template.data.hashing import HashingWriter, digest_bytes, digest_stream, short_id, validate_name
from mlops_template.data.layout import PART, PREFIX, parts_folder
from mlops_template.errors import DataError, IntegrityError, MlopsError
from mlops_template.progress import activity

BLOCK = 8 << 20  # bytes of a CSV or JSON-lines file per partition: a few times that in memory per task

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa
    from dask.dataframe import DataFrame as DaskFrame

    from mlops_template.data.layout import Snapshot
    from mlops_template.data.snapshots import SnapshotStore, Stored
    from mlops_template.data.stats import Profile
    from mlops_template.storage import Storage


def parts_digest(digests: Sequence[str]) -> str:
    """The digest of a partitioned table: BLAKE3 over its parts' digests, in order."""
    return digest_bytes("\n".join(digests).encode())


def staging_folder(name: str) -> str:
    """A hidden folder for parts being written; never listed as a snapshot, dropped if the write fails."""
    return f"{PREFIX}/{name}/.parts-{uuid.uuid4().hex}"


def arrow_schema(ddf: DaskFrame) -> pa.Schema:
    """The one schema every part is written with (from the frame's meta), so parts agree even where one is all-null."""
    import pyarrow as pa

    return pa.Schema.from_pandas(ddf._meta, preserve_index=False)


def write_parts(
    storage: Storage, folder: str, ddf: DaskFrame, advance: Callable[[int], None]
) -> tuple[list[dict[str, Any]], Profile]:
    """Write every partition of `ddf` as `folder/part-NNNNN.parquet`, on the workers; their records and merged profile.

    Records are `{file, rows, digest, bytes}` in partition order.
    """
    from dask import delayed

    ddf = pandas_strings(ddf)
    schema = arrow_schema(ddf)
    write = delayed(write_part, pure=False)
    tasks = [
        write(storage, folder, PART.format(i), part, schema)
        for i, part in enumerate(ddf.to_delayed(optimize_graph=True))
    ]
    results = run(tasks, advance)
    profile = None
    records = []
    for record, part_profile in results:
        records.append(record)
        if profile is None:
            profile = part_profile
        else:
            profile.merge(part_profile)
    if profile is None:  # a frame with no partitions
        from mlops_template.data.stats import Profile

        profile = Profile(schema)
    return records, profile


def pandas_strings(ddf: DaskFrame) -> DaskFrame:
    """Text columns as pandas' own `str` (missing as NaN), as the pandas engine has them.

    Dask makes text `string[pyarrow]`, missing as `pd.NA`, which a stored part
    would keep and scikit-learn's encoders refuse.
    """
    import pandas as pd

    text = {
        c: "str" for c, dtype in ddf.dtypes.items() if isinstance(dtype, pd.StringDtype) and dtype.na_value is pd.NA
    }
    return ddf.astype(text) if text else ddf


def write_part(
    storage: Storage, folder: str, file: str, df: pd.DataFrame, schema: pa.Schema
) -> tuple[dict[str, Any], Profile]:
    """On a worker: one partition to `folder/file` as parquet, hashed as written; its record and profile."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from mlops_template.data.stats import profile_batches

    try:
        table = pa.Table.from_pandas(df, schema=schema, preserve_index=False)
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise DataError(
            f"partition {file} does not fit the table's columns ({exc}); give every partition the same dtypes"
        ) from exc
    with storage.stage(folder) as stage:
        writer = HashingWriter(stage.file)
        pq.write_table(table, writer)
        stage.commit(f"{folder}/{file}")
    profile = profile_batches(table.schema, table.to_batches(), prefetch=False)
    return {"file": file, "rows": table.num_rows, "digest": writer.hexdigest(), "bytes": writer.size}, profile


def read_parts(storage: Storage, keys: Sequence[str], digests: Sequence[str]) -> DaskFrame:
    """A Dask DataFrame over stored parquet parts, one partition each, each verified against its digest."""
    import dask.dataframe as dd

    from mlops_template.data.engines import configure_dask

    configure_dask()
    meta = _meta(storage, keys[0]) if keys else None
    return dd.from_map(read_part, [(storage, k, d) for k, d in zip(keys, digests, strict=True)], meta=meta)


def read_part(args: tuple[Storage, str, str]) -> pd.DataFrame:
    """On a worker: one stored part, refused if its bytes no longer match its digest."""
    from mlops_template.data.tables import parse_table

    storage, key, digest = args
    return parse_table(check_part(storage, key, digest), storage.uri(key))


def check_part(storage: Storage, key: str, digest: str) -> bytes:
    """A stored part's bytes, refused if they no longer match the digest its snapshot records."""
    data = storage.read_bytes(key)
    if digest_bytes(data) != digest:
        raise IntegrityError(
            f"{storage.uri(key)}: its bytes no longer match the digest its snapshot records (changed or corrupted); "
            "`mlops data verify --repair` restores it from an intact copy, if one is left"
        )
    return data


def read_file(storage: Storage, key: str, fmt: str) -> DaskFrame:
    """A Dask DataFrame over one stored parquet or CSV file, read in blocks by the workers."""
    import dask.dataframe as dd

    from mlops_template.data.engines import configure_dask

    configure_dask()
    uri, options = storage.uri(key), storage.fsspec_options()
    if fmt == "csv":
        return dd.read_csv(uri, blocksize=BLOCK, storage_options=options)
    return dd.read_parquet(uri, storage_options=options, split_row_groups="adaptive")


def _meta(storage: Storage, key: str) -> pd.DataFrame:
    """The empty frame of a part's columns and dtypes, from its parquet footer only."""
    import pyarrow.parquet as pq

    from mlops_template.data.tables import to_pandas

    with storage.open_read(key) as f:
        return to_pandas(pq.read_schema(f).empty_table())


def stored_part_digests(storage: Storage, keys: Sequence[str]) -> list[str]:
    """The digests of stored parts as they are now (hashed where they are: in parallel on the workers if any)."""
    from dask import delayed

    return run([delayed(_stored_digest, pure=False)(storage, k) for k in keys], None)


def _stored_digest(storage: Storage, key: str) -> str:
    with storage.open_read(key) as f:
        return digest_stream(f)


def run(tasks: list, advance: Callable[[int], None] | None) -> list:
    """Compute delayed tasks on the process's Dask client (one advance per task done), else in this process."""
    import dask

    try:
        from distributed import as_completed, get_client

        client = get_client()
    except (ImportError, ValueError):
        return list(dask.compute(*tasks, scheduler="threads"))
    futures = client.compute(tasks)
    try:
        for _ in as_completed(futures):
            if advance is not None:
                advance(1)
        return client.gather(futures)
    finally:
        client.cancel(futures)


def columns_differ(first: str, first_columns: list[str], other: str, other_columns: list[str]) -> DataError:
    """The one error for files of one raw read whose columns are not the same."""
    missing = [c for c in first_columns if c not in other_columns]
    extra = [c for c in other_columns if c not in first_columns]
    detail = (
        "; ".join(part for part in (f"missing {missing}" if missing else "", f"extra {extra}" if extra else "") if part)
        or f"columns in another order: {other_columns}"
    )
    return DataError(
        f"{other}: its columns differ from {first}'s ({detail}); give every file of one read the same columns "
        "or read them separately"
    )


def store_frame(
    store: SnapshotStore, name: str, ddf: DaskFrame, *, run_id: str | None, step: str | None, current: bool
) -> Stored:
    """`SnapshotStore.write_dask`: the parts staged, moved under the id, the manifest last; nothing on failure."""
    from mlops_template.data.snapshots import Stored

    validate_name(name)
    folder = staging_folder(name)
    try:
        with activity(f"writing {name} ({ddf.npartitions:,} partitions)", total=ddf.npartitions) as advance:
            parts, profile = write_parts(store.storage, folder, ddf, advance)
        digest = parts_digest([part["digest"] for part in parts])
        existing = store._complete(name, digest)
        if existing is None or not store._intact(existing):
            target = parts_folder(name, short_id(digest))
            for part in parts:
                store.storage.move(f"{folder}/{part['file']}", f"{target}/{part['file']}")
    except MlopsError:
        raise
    except Exception as exc:  # a worker's failure arrives as whatever it raised, or distributed's KilledWorker
        raise DataError(
            f"writing dataset '{name}' on the Dask workers failed ({type(exc).__name__}: {exc}); "
            f"nothing was stored under '{name}'"
        ) from exc
    finally:
        store.storage.delete(folder)
    if existing is not None:
        stored = Stored(existing, written=False)
    else:
        size = sum(part["bytes"] for part in parts)
        snapshot = store._finish(name, digest, "parquet", size, profile.summary(), run_id, step, None, partitions=parts)
        stored = Stored(snapshot, written=True)
    if current:
        store.set_current(stored.snapshot)
    return stored


def read_parts_pandas(storage: Storage, snapshot: Snapshot) -> pd.DataFrame:
    """A partitioned snapshot as one pandas DataFrame, each part verified against its digest."""
    import pyarrow as pa

    from mlops_template.data.partitioned import check_part
    from mlops_template.data.tables import read_arrow, to_pandas

    tables = []
    with activity(f"reading {snapshot.ref} ({snapshot.rows:,} rows)", total=snapshot.bytes) as advance:
        for key, part in zip(snapshot.part_keys, snapshot.partitions, strict=True):
            data = check_part(storage, key, part["digest"])
            tables.append(read_arrow(data, "parquet"))
            advance(len(data))
    if not tables:
        raise DataError(f"snapshot {snapshot.ref} has no parts")
    return to_pandas(pa.concat_tables(tables))
