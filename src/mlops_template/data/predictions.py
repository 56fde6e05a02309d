"""Batch predictions as a pipeline run's `predict` step stored them, read back by that run's id.

A notebook or another program reads them here rather than by storage key, so it
works the same on a local folder and on S3 and says what to do when a run made none.

Layout under the environment's storage root, one of::

    predictions/<run-id>.parquet                 one file (a pandas table)
    predictions/<run-id>/part-NNNNN.parquet      or parts written by the Dask workers,
    predictions/<run-id>/_manifest.json          and their manifest, written last (no manifest: incomplete)
    predictions/<run-id>.reused.json             or {"from": <run-id>}: a predict step reused from that run's
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from mlops_template.config.load import Config, Environment
from mlops_template.errors import DataError, MlopsError, StorageError

if TYPE_CHECKING:
    import pandas as pd
    from dask.dataframe import DataFrame as DaskFrame

    from mlops_template.storage import Storage

_RUN_ID = re.compile(r"[A-Za-z0-9_-]+")
PREFIX = "predictions"
MANIFEST = "_manifest.json"  # '_': parquet readers of the folder (Dask, pyarrow) skip it
_MAX_REFERRALS = 100  # reused from a reused run, and so on: a chain longer than this is taken for a loop


def predictions_key(run_id: str) -> str:
    """Where a pipeline run's predictions are stored, under the environment's storage root."""
    if not _RUN_ID.fullmatch(run_id):
        raise StorageError(
            f"pipeline run id {run_id!r} is invalid; pass the id `mlops runs` lists (letters, digits, '-', '_')"
        )
    return f"{PREFIX}/{run_id}.parquet"


def predictions_folder(run_id: str) -> str:
    """Where a pipeline run's predictions are stored as parts (written by Dask workers), under the storage root."""
    return predictions_key(run_id).removesuffix(".parquet")


def refer(storage: Storage, run_id: str, source: str) -> None:
    """Record that pipeline run `run_id`'s predictions are those `source` stored (its predict step was reused)."""
    storage.write_bytes(_reused_key(run_id), json.dumps({"from": source}).encode())


def stored_by(storage: Storage, run_id: str) -> str | None:
    """The pipeline run whose stored predictions `run_id`'s are (itself, or the one it reused); None if none are."""
    for _ in range(_MAX_REFERRALS):
        if storage.exists(predictions_key(run_id)) or _manifest(storage, run_id) is not None:
            return run_id
        try:
            run_id = str(json.loads(storage.read_bytes(_reused_key(run_id)))["from"])
        except StorageError as exc:
            if isinstance(exc.__cause__, FileNotFoundError):
                return None
            raise
    return None


def _reused_key(run_id: str) -> str:
    return predictions_key(run_id).removesuffix(".parquet") + ".reused.json"


def write_parts(
    storage: Storage, run_id: str, ddf: DaskFrame, advance: Callable[[int], None] | None = None
) -> dict[str, Any]:
    """Store a Dask DataFrame's predictions as parts of `predictions/<run_id>/`, written by the workers.

    The parts are written to a hidden folder and moved into place, then the
    manifest `{rows, digest, parts}` is written last; predictions an earlier
    attempt of the run stored (in either layout) are replaced. If a worker
    fails, nothing changes. Returns the manifest.
    """
    from mlops_template.data import partitioned

    folder = predictions_folder(run_id)
    staging = f"{PREFIX}/.{run_id}-{uuid.uuid4().hex}"
    try:
        parts, _ = partitioned.write_parts(storage, staging, ddf, advance or (lambda _: None))
        manifest = {
            "rows": sum(part["rows"] for part in parts),
            "digest": partitioned.parts_digest([part["digest"] for part in parts]),
            "parts": parts,
        }
        storage.delete(folder)  # an earlier attempt's parts, its manifest with them
        for part in parts:
            storage.move(f"{staging}/{part['file']}", f"{folder}/{part['file']}")
        storage.write_bytes(f"{folder}/{MANIFEST}", json.dumps(manifest, indent=1).encode())
        storage.delete(predictions_key(run_id))  # an earlier attempt's single file
    except MlopsError:
        raise
    except Exception as exc:  # a worker's failure arrives as whatever it raised, or distributed's KilledWorker
        raise DataError(
            f"writing the predictions of pipeline run '{run_id}' on the Dask workers failed "
            f"({type(exc).__name__}: {exc}); no new predictions were stored"
        ) from exc
    finally:
        storage.delete(staging)
    return manifest


def _manifest(storage: Storage, run_id: str) -> dict[str, Any] | None:
    """The manifest of a run's predictions stored as parts; None when there are none."""
    folder = predictions_folder(run_id)
    try:
        return json.loads(storage.read_bytes(f"{folder}/{MANIFEST}"))
    except StorageError as exc:
        if not isinstance(exc.__cause__, FileNotFoundError):
            raise
    if storage.list(folder):
        raise StorageError(
            f"the predictions of pipeline run '{run_id}' at {storage.uri(folder)} are incomplete (no {MANIFEST}): "
            "its predict step did not finish; run it again (`mlops run --step predict`)"
        )
    return None


def read_predictions(
    config: Config, run_id: str, environment: str | Environment | None = None, *, engine: str = "pandas"
) -> pd.DataFrame | DaskFrame:
    """The table of predictions pipeline run `run_id` stored, read from `environment`'s storage.

    Either layout: one file, or the parts the Dask workers wrote (each checked
    against the digest its manifest records), in order.

    Args:
        config: the project's config (`load_config()`).
        run_id: the pipeline (parent) run's id: `PipelineResult.run_id`, or an id `mlops runs` lists.
        environment: a name or an `Environment`; default `MLOPS_ENVIRONMENT`, else the project's default.
        engine: "pandas" for a DataFrame in memory, "dask" for a Dask DataFrame (a partition per part).
    """
    from mlops_template.data.tables import parse_table
    from mlops_template.storage import open_storage

    env = environment if isinstance(environment, Environment) else config.environment(environment)
    storage = open_storage(env)
    if engine not in ("pandas", "dask"):
        raise DataError(f"engine '{engine}' is unknown; use engine='pandas' or engine='dask'")
    run_id = stored_by(storage, run_id) or run_id
    key = predictions_key(run_id)
    try:
        data = storage.read_bytes(key)
    except StorageError as exc:
        if not isinstance(exc.__cause__, FileNotFoundError):
            raise
        manifest = _manifest(storage, run_id)
        if manifest is None:
            raise StorageError(
                f"pipeline run '{run_id}' stored no predictions in environment '{env.name}' "
                f"(neither {storage.uri(predictions_folder(run_id))}/ nor {storage.uri(key)}); "
                "pass the id of a run whose predict step finished (`mlops runs`), or run `mlops run --step predict`"
            ) from exc
        return _read_parts(storage, run_id, manifest, engine)
    df = parse_table(data, storage.uri(key))
    if engine == "dask":
        import dask.dataframe as dd

        return dd.from_pandas(df, npartitions=1)
    return df


def _read_parts(storage: Storage, run_id: str, manifest: dict[str, Any], engine: str) -> pd.DataFrame | DaskFrame:
    from mlops_template.data import partitioned

    folder = predictions_folder(run_id)
    keys = [f"{folder}/{part['file']}" for part in manifest["parts"]]
    digests = [part["digest"] for part in manifest["parts"]]
    if engine == "dask":
        return partitioned.read_parts(storage, keys, digests)
    import pandas as pd

    from mlops_template.data.tables import parse_table

    frames = [
        parse_table(partitioned.check_part(storage, k, d), storage.uri(k)) for k, d in zip(keys, digests, strict=True)
    ]
    if not frames:
        raise StorageError(f"the predictions of pipeline run '{run_id}' at {storage.uri(folder)} have no parts")
    return pd.concat(frames, ignore_index=True)
