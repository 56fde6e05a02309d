"""Snapshots: every dataset version, kept once, by content, beside the run that made it.

Bytes are hashed while they stream to storage (constant memory, no read-back),
a version that is already stored is not written again, and every load
checks the bytes against the digest in the manifest. Where the files are is
`mlops_template.data.layout`; how commands name a snapshot, `mlops_template.data.refs`;
copies in and out, `mlops_template.data.copies`; tables in parts, `mlops_template.data.partitioned`.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from mlops_template.data.hashing import (
    HashingWriter,
    digest_bytes,
    digest_file,
    digest_stream,
    short_id,
    validate_name,
)
from mlops_template.data.layout import (
    PREFIX,
    Snapshot,
    complete_manifests,
    current_key,
    data_key,
    manifest_key,
)
from mlops_template.data.refs import resolve_ref
from mlops_template.data.tables import parse_table, read_arrow
from mlops_template.errors import DataError, IntegrityError, StorageError
from mlops_template.progress import activity

logger = logging.getLogger(__name__)

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa
    from dask.dataframe import DataFrame as DaskFrame

    from mlops_template.config.load import Config, Environment
    from mlops_template.storage import Storage


@dataclass(frozen=True)
class Stored:
    """The outcome of storing a version: the snapshot, and whether any bytes were written for it."""

    snapshot: Snapshot
    written: bool


class SnapshotStore:
    """The snapshots of one environment's storage."""

    def __init__(self, storage: Storage) -> None:
        self.storage = storage

    def uri(self, snapshot: Snapshot) -> str:
        return self.storage.uri(snapshot.key)

    # -- writing ---------------------------------------------------------------
    def write_table(
        self,
        name: str,
        data: pd.DataFrame | pa.Table,
        *,
        run_id: str | None = None,
        step: str | None = None,
        current: bool = True,
    ) -> Stored:
        """Store a table as parquet, hashing it as it is written; make it the current version unless `current=False`."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        from mlops_template.data.manifest import profile_table

        validate_name(name)
        table = data if isinstance(data, pa.Table) else pa.Table.from_pandas(data, preserve_index=False)
        with self.storage.stage(f"{PREFIX}/{name}") as stage:
            with activity(f"writing {name} ({table.num_rows:,} rows)") as advance:
                writer = HashingWriter(stage.file, advance)
                pq.write_table(table, writer)
            digest, size = writer.hexdigest(), writer.size
            existing = self._complete(name, digest)
            if existing is None or not self._intact(existing):
                stage.commit(data_key(name, short_id(digest), "parquet"))
        if existing is not None:
            stored = Stored(existing, written=False)
        else:
            with activity(f"profiling {name} ({table.num_rows:,} rows)"):
                manifest = profile_table(table)
            stored = Stored(self._finish(name, digest, "parquet", size, manifest, run_id, step, None), written=True)
        if current:
            self.set_current(stored.snapshot)
        return stored

    def write_dask(
        self,
        name: str,
        ddf: DaskFrame,
        *,
        run_id: str | None = None,
        step: str | None = None,
        current: bool = True,
    ) -> Stored:
        """Store a Dask DataFrame as a partitioned snapshot, one parquet part per partition, written by the workers.

        Parts are written to a hidden folder, then moved under the snapshot's id
        and the manifest written last; if a worker dies or a part fails, the
        folder is dropped and nothing is stored under `name`.
        """
        from mlops_template.data.partitioned import store_frame

        return store_frame(self, name, ddf, run_id=run_id, step=step, current=current)

    def add_file(
        self,
        path: str | os.PathLike[str],
        name: str,
        *,
        run_id: str | None = None,
        step: str | None = None,
    ) -> Stored:
        """Bring a local CSV or parquet file under versioning, byte for byte, and make it current: `data.copies`."""
        from mlops_template.data.copies import add_file

        return add_file(self, path, name, run_id=run_id, step=step)

    def adopt(self, name: str, data: bytes, fmt: str, *, run_id: str | None, step: str | None) -> Snapshot:
        """The snapshot of bytes read from a dataset's current file, stored first if it is not yet.

        Keeps lineage whole when `datasets/` holds a file written by other means.
        """
        digest = digest_bytes(data)
        existing = self._complete(name, digest)
        if existing is not None:
            if not self._intact(existing):
                self.storage.write_bytes(existing.key, data)
            return existing
        from mlops_template.data.manifest import profile_table

        try:
            table = read_arrow(data, fmt)
        except Exception as exc:
            uri = self.storage.uri(current_key(name, fmt))
            raise StorageError(f"{uri}: cannot be read as {fmt} ({exc}); is the file complete?") from exc
        self.storage.write_bytes(data_key(name, short_id(digest), fmt), data)
        with activity(f"profiling {name} ({table.num_rows:,} rows)"):
            manifest = profile_table(table)
        return self._finish(name, digest, fmt, len(data), manifest, run_id, step, None)

    def _finish(self, name, digest, fmt, size, manifest, run_id, step, source, partitions=None) -> Snapshot:
        """Write the manifest (last: it is what makes the snapshot complete)."""
        snapshot = Snapshot(
            name=name,
            id=short_id(digest),
            digest=digest,
            format=fmt,
            bytes=size,
            rows=manifest["rows"],
            columns=manifest["columns"],
            created_at=datetime.now(UTC).isoformat(timespec="microseconds"),
            run_id=run_id,
            step=step,
            source=source,
            extra={"partitions": partitions} if partitions is not None else {},
        )
        body = json.dumps(snapshot.to_json(), indent=1, default=str).encode()
        self.storage.write_bytes(manifest_key(name, snapshot.id), body)
        return snapshot

    def _complete(self, name: str, digest: str) -> Snapshot | None:
        """The stored snapshot of the bytes with this full digest, if both its bytes and its manifest exist.

        Snapshots are named by the first 16 hex digits of the digest; one found
        under that id whose manifest records another digest is refused rather
        than taken for the same bytes.
        """
        snapshot = self._stored(name, short_id(digest))
        if snapshot is not None and snapshot.digest != digest:
            raise IntegrityError(
                f"{self.storage.uri(manifest_key(name, snapshot.id))}: snapshot {snapshot.ref} records digest "
                f"{snapshot.digest}, but the bytes being stored have digest {digest}: two versions share one id "
                "(a 64-bit prefix collision) or the manifest was changed; restore it from a backup, "
                f"or delete {self.storage.uri(snapshot.key)} and its manifest and store the data again"
            )
        return snapshot

    def _stored(self, name: str, snapshot_id: str) -> Snapshot | None:
        """The snapshot `name:snapshot_id` if its manifest and its bytes (or every part) are stored, else None."""
        try:
            manifest = self.storage.read_bytes(manifest_key(name, snapshot_id))
        except StorageError as exc:
            if isinstance(exc.__cause__, FileNotFoundError):
                return None
            raise
        snapshot = Snapshot.from_json(json.loads(manifest))
        if snapshot.partitioned:
            whole = set(snapshot.part_keys) <= set(self.storage.list(snapshot.key))
        else:
            whole = self.storage.exists(snapshot.key)
        return snapshot if whole else None

    def _intact(self, snapshot: Snapshot, *, repairing: bool = True) -> bool:
        """Whether the stored bytes of a snapshot about to be reused still hash to its id.

        A stored object overwritten in the bucket must never become a current
        copy or a model's data: when it no longer matches, the caller stores the
        fresh bytes it holds (the right ones, by their hash) in its place, and
        the user is told once.
        """
        if self.snapshot_digest(snapshot) == snapshot.digest:
            return True
        if repairing:
            logger.warning(
                "%s no longer matched snapshot %s (overwritten or corrupted); replaced with the bytes just written, "
                "which do. `mlops data verify` checks every snapshot",
                self.uri(snapshot),
                snapshot.ref,
            )
        return False

    def has(self, name: str, snapshot_id: str) -> bool:
        """Whether the snapshot `name:snapshot_id` is still stored whole: its manifest and its bytes (or parts)."""
        return self._stored(name, snapshot_id) is not None

    def find(self, name: str, digest: str) -> Snapshot | None:
        """The complete snapshot of `name` with this full digest, None when it is not stored here."""
        return self._complete(name, digest)

    def copy_from(self, source: SnapshotStore, snapshot: Snapshot) -> Stored:
        """Bring a snapshot of another storage (another environment's) here, under the same id: `data.copies`."""
        from mlops_template.data.copies import copy_from

        return copy_from(self, source, snapshot)

    def set_current(self, snapshot: Snapshot) -> None:
        """Make `datasets/<name>` a copy of this snapshot; see `data.current`."""
        from mlops_template.data.current import set_current

        set_current(self, snapshot)

    def snapshot_digest(self, snapshot: Snapshot) -> str:
        """The full digest of a snapshot's stored data as it is now (over its parts' digests when partitioned)."""
        if not snapshot.partitioned:
            return self.stored_digest(snapshot.key)
        from mlops_template.data.partitioned import parts_digest, stored_part_digests

        with activity(f"hashing {snapshot.ref} ({len(snapshot.partitions):,} parts)"):
            return parts_digest(stored_part_digests(self.storage, snapshot.part_keys))

    def stored_digest(self, key: str) -> str:
        """The full digest of a stored file: memory-mapped where it is on this machine, streamed otherwise."""
        path = self.storage.local_path(key)
        if path is not None:
            try:
                with activity(f"hashing {key}"):
                    return digest_file(path)
            except FileNotFoundError as exc:
                raise StorageError(f"{self.storage.uri(key)}: not found; was it removed meanwhile?") from exc
        with self.storage.open_read(key) as f, activity(f"hashing {key}") as advance:
            return digest_stream(f, advance)

    def _drop_other_formats(self, snapshot: Snapshot) -> None:
        from mlops_template.data.current import drop_other_formats

        drop_other_formats(self, snapshot)

    # -- finding ---------------------------------------------------------------
    def list(self, name: str | None = None) -> list[Snapshot]:
        """Complete snapshots, newest first (all datasets, or one)."""
        folder = f"{PREFIX}/{validate_name(name)}" if name else PREFIX
        keys = complete_manifests(self.storage.list(folder))
        snapshots = [Snapshot.from_json(json.loads(body)) for body in self.storage.read_many(keys).values()]
        return sorted(snapshots, key=lambda s: (s.created_at, s.name), reverse=True)

    def names(self) -> list[str]:
        return sorted({k.split("/")[1] for k in complete_manifests(self.storage.list(PREFIX))})

    def current(self, name: str) -> Snapshot:
        """The snapshot that `datasets/<name>` holds now (found by hashing it); see `data.current`."""
        from mlops_template.data.current import current

        return current(self, name)

    def resolve(self, ref: str) -> Snapshot:
        """A snapshot from `ID`, a unique id prefix, `NAME:ID`, or `NAME` (its current version); see `data.refs`."""
        return resolve_ref(self, ref)

    # -- reading ---------------------------------------------------------------
    def read_bytes(self, snapshot: Snapshot) -> bytes:
        """The snapshot's bytes, refused if they no longer match its digest."""
        if snapshot.partitioned:
            raise DataError(
                f"snapshot {snapshot.ref} is partitioned ({len(snapshot.partitions)} parts); read it with "
                f"engine='dask', or `mlops data get {snapshot.ref}` for a folder of its parts"
            )
        with activity(f"reading {snapshot.ref}"):
            data = self.storage.read_bytes(snapshot.key)
        if digest_bytes(data) != snapshot.digest:
            raise tampered(self.storage.uri(snapshot.key), snapshot)
        return data

    def read(self, ref: str | Snapshot) -> tuple[Snapshot, pd.DataFrame]:
        """A snapshot as one pandas DataFrame (a partitioned one's parts concatenated), verified against its id."""
        snapshot = ref if isinstance(ref, Snapshot) else self.resolve(ref)
        if snapshot.partitioned:
            from mlops_template.data.partitioned import read_parts_pandas

            return snapshot, read_parts_pandas(self.storage, snapshot)
        data = self.read_bytes(snapshot)
        with activity(f"parsing {snapshot.ref} ({snapshot.rows:,} rows)"):
            return snapshot, parse_table(data, self.uri(snapshot))

    def read_dask(self, ref: str | Snapshot) -> tuple[Snapshot, DaskFrame]:
        """A snapshot as a Dask DataFrame: a partition per part (each verified by the worker reading it), or blocks of one file."""
        from mlops_template.data.partitioned import read_file, read_parts

        snapshot = ref if isinstance(ref, Snapshot) else self.resolve(ref)
        if snapshot.partitioned:
            digests = [part["digest"] for part in snapshot.partitions]
            return snapshot, read_parts(self.storage, snapshot.part_keys, digests)
        if self.stored_digest(snapshot.key) != snapshot.digest:
            raise tampered(self.storage.uri(snapshot.key), snapshot)
        return snapshot, read_file(self.storage, snapshot.key, snapshot.format)

    def get(self, ref: str | Snapshot, to: str | os.PathLike[str] | None = None) -> Path:
        """Copy a snapshot to a local file (a folder for a partitioned one), verified: `data.copies`."""
        from mlops_template.data.copies import get

        return get(self, ref, to)


def open_snapshots(
    config: Config, environment: str | Environment | None = None, *, check: bool = False
) -> SnapshotStore:
    """The snapshot store of a project's environment (default: MLOPS_ENVIRONMENT or `local`).

    With `check`, its storage is probed first, so that a missing bucket or
    denied credentials fail at once, naming the environment and the fix.
    """
    from mlops_template.storage import open_storage

    env = environment if not isinstance(environment, str | None) else config.environment(environment)
    return SnapshotStore(open_storage(env, check=check))


def tampered(uri: str, snapshot: Snapshot) -> IntegrityError:
    return IntegrityError(
        f"{uri}: its bytes no longer match snapshot {snapshot.ref} (changed or corrupted since it was stored); "
        f"`mlops data verify {snapshot.name} --repair` restores it from an intact copy, if one is left"
    )
