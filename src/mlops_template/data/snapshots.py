"""Snapshots: every dataset version, kept once, by content, beside the run that made it.

Bytes are hashed while they stream to storage (constant memory, no read-back),
a version that is already stored is not written again, and every load
checks the bytes against the digest in the manifest. Where the files are is
`mlops_template.data.layout`; how commands name a snapshot, `mlops_template.data.refs`.
"""

from __future__ import annotations

import json
import logging
import os
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from mlops_template.data.hashing import (
    FORMATS,
    HashingWriter,
    copy_hashing,
    digest_bytes,
    digest_file,
    short_id,
    stream_file,
    validate_name,
)
from mlops_template.data.layout import (
    PREFIX,
    Snapshot,
    complete_manifests,
    current_key,
    data_key,
    file_format,
    manifest_key,
)
from mlops_template.data.refs import known_datasets, resolve_ref
from mlops_template.data.tables import parse_table, read_arrow
from mlops_template.errors import IntegrityError, StorageError
from mlops_template.progress import activity

logger = logging.getLogger(__name__)

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa

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

    def add_file(
        self,
        path: str | os.PathLike[str],
        name: str,
        *,
        run_id: str | None = None,
        step: str | None = None,
    ) -> Stored:
        """Bring a local CSV or parquet file under versioning, stored byte for byte, and make it current.

        The file is read once: it streams to storage, hashed on the way, while a
        second thread profiles it for the manifest. When a stored version of
        `name` has the same size, the file is hashed first instead (a read-only,
        memory-mapped pass), so an unchanged file is recognised without writing.
        """
        from concurrent.futures import ThreadPoolExecutor

        validate_name(name)
        path = Path(path)
        fmt = file_format(path)
        if not path.is_file():
            raise StorageError(f"{path}: not found; give the path of a .csv or .parquet file")
        before = path.stat()
        folder = f"{PREFIX}/{name}"
        if before.st_size in {n for k, n in self.storage.sizes(folder).items() if k.endswith(f".{fmt}")}:
            with activity(f"hashing {path.name}"):
                snapshot = self._complete(name, digest_file(path))
            if snapshot is not None and self._intact(snapshot, repairing=False):
                self.set_current(snapshot)
                return Stored(snapshot, written=False)

        current = current_key(name, fmt)
        with ThreadPoolExecutor(1) as pool, ExitStack() as staged:
            profiling = pool.submit(_profile_file, path, fmt)
            try:
                stage = staged.enter_context(self.storage.stage(folder))
                # Where staging is in place (a local folder) the current copy is written in the same pass.
                copy = (
                    staged.enter_context(self.storage.stage("datasets", current))
                    if self.storage.stages_in_place
                    else None
                )
                with activity(f"storing {path.name}", total=before.st_size) as advance:
                    digest, size = stream_file(path, stage.file, *([copy.file] if copy else []), advance=advance)
                try:
                    manifest = profiling.result()
                except Exception as exc:
                    raise StorageError(
                        f"{path}: cannot be read as {fmt} ({exc}); is it a complete {fmt} file?"
                    ) from exc
                after = path.stat()
                if (size, after.st_size, after.st_mtime_ns) != (before.st_size, before.st_size, before.st_mtime_ns):
                    raise StorageError(f"{path}: changed while it was being added; add it again once it is complete")
                snapshot = self._complete(name, digest)
                written = snapshot is None
                if snapshot is None or not self._intact(snapshot):
                    stage.commit(data_key(name, short_id(digest), fmt))
                if snapshot is None:
                    snapshot = self._finish(name, digest, fmt, size, manifest, run_id, step, str(path.resolve()))
                if copy is not None:
                    copy.commit(current)
            except BaseException:
                profiling.cancel()
                raise
        if copy is None:
            self.set_current(snapshot)
        else:
            self._drop_other_formats(snapshot)
        return Stored(snapshot, written=written)

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

    def _finish(self, name, digest, fmt, size, manifest, run_id, step, source) -> Snapshot:
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
        key = manifest_key(name, short_id(digest))
        try:
            manifest = self.storage.read_bytes(key)
        except StorageError as exc:
            if isinstance(exc.__cause__, FileNotFoundError):
                return None
            raise
        snapshot = Snapshot.from_json(json.loads(manifest))
        if not self.storage.exists(snapshot.key):
            return None
        if snapshot.digest != digest:
            raise IntegrityError(
                f"{self.storage.uri(key)}: snapshot {snapshot.ref} records digest {snapshot.digest}, "
                f"but the bytes being stored have digest {digest}: two versions share one id "
                "(a 64-bit prefix collision) or the manifest was changed; restore it from a backup, "
                f"or delete {self.storage.uri(snapshot.key)} and its manifest and store the data again"
            )
        return snapshot

    def _intact(self, snapshot: Snapshot, *, repairing: bool = True) -> bool:
        """Whether the stored bytes of a snapshot about to be reused still hash to its id.

        A stored object overwritten in the bucket must never become a current
        copy or a model's data: when it no longer matches, the caller stores the
        fresh bytes it holds (the right ones, by their hash) in its place, and
        the user is told once.
        """
        if self.stored_digest(snapshot.key) == snapshot.digest:
            return True
        if repairing:
            logger.warning(
                "%s no longer matched snapshot %s (overwritten or corrupted); replaced with the bytes just written, "
                "which do. `mlops data verify` checks every snapshot",
                self.uri(snapshot),
                snapshot.ref,
            )
        return False

    def find(self, name: str, digest: str) -> Snapshot | None:
        """The complete snapshot of `name` with this full digest, None when it is not stored here."""
        return self._complete(name, digest)

    def copy_from(self, source: SnapshotStore, snapshot: Snapshot) -> Stored:
        """Bring a snapshot of another storage (another environment's) here, byte for byte, under the same id.

        Nothing is written when it is here already. Otherwise its bytes stream
        into a staged file, hashed on the way, and are published only if they
        match the digest; the stored copy is then read back and hashed again,
        and the manifest (the source's, unchanged) is written last, so an
        interrupted copy leaves nothing listed.
        """
        here = self._complete(snapshot.name, snapshot.digest)
        if here is not None and self._intact(here):
            return Stored(snapshot, written=False)
        with self.storage.stage(f"{PREFIX}/{snapshot.name}") as stage:
            with (
                source.storage.open_read(snapshot.key) as f,
                activity(f"copying {snapshot.ref}", total=snapshot.bytes) as advance,
            ):
                digest, _ = copy_hashing(f, stage.file, advance)
            if digest != snapshot.digest:
                raise _tampered(source.uri(snapshot), snapshot)
            stage.commit(snapshot.key)
        if self.stored_digest(snapshot.key) != snapshot.digest:
            self.storage.delete(snapshot.key)
            raise IntegrityError(
                f"{self.uri(snapshot)}: the copy of snapshot {snapshot.ref} does not match its digest once stored; "
                "nothing was kept, check the storage and copy again"
            )
        manifest = source.storage.read_bytes(manifest_key(snapshot.name, snapshot.id))
        self.storage.write_bytes(manifest_key(snapshot.name, snapshot.id), manifest)
        return Stored(snapshot, written=True)

    def set_current(self, snapshot: Snapshot) -> None:
        """Make `datasets/<name>` a copy of this snapshot (a server-side copy on S3, in-kernel locally).

        Nothing is copied when it already is one.
        """
        key = current_key(snapshot.name, snapshot.format)
        if not self._holds(key, snapshot):
            self.storage.copy(snapshot.key, key)
        self._drop_other_formats(snapshot)

    def _holds(self, key: str, snapshot: Snapshot) -> bool:
        """Whether `key` holds the snapshot's bytes: asked of the storage first (sizes, ETags), hashed only if it cannot tell."""
        same = self.storage.same_copy(key, snapshot.key)
        return self.stored_digest(key) == snapshot.digest if same is None else same

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
            digest, _ = copy_hashing(f, _Discard(), advance)
        return digest

    def _drop_other_formats(self, snapshot: Snapshot) -> None:
        """A dataset has one current copy: writing a CSV version removes a parquet one, and back."""
        for other in FORMATS:
            if other != snapshot.format:
                self.storage.delete(current_key(snapshot.name, other))

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
        """The snapshot that `datasets/<name>` holds now (found by hashing it)."""
        for fmt in FORMATS:
            key = current_key(name, fmt)
            if self.storage.exists(key):
                found = self._complete(name, self.stored_digest(key))
                if found is None:
                    raise StorageError(
                        f"{self.storage.uri(key)} is not a stored snapshot yet; a step that reads it stores one, "
                        f"or `mlops data add {self.storage.uri(key)} --name {name}`"
                    )
                return found
        raise StorageError(f"dataset '{name}' has no current version; {known_datasets(self)}")

    def resolve(self, ref: str) -> Snapshot:
        """A snapshot from `ID`, a unique id prefix, `NAME:ID`, or `NAME` (its current version); see `data.refs`."""
        return resolve_ref(self, ref)

    # -- reading ---------------------------------------------------------------
    def read_bytes(self, snapshot: Snapshot) -> bytes:
        """The snapshot's bytes, refused if they no longer match its digest."""
        with activity(f"reading {snapshot.ref}"):
            data = self.storage.read_bytes(snapshot.key)
        if digest_bytes(data) != snapshot.digest:
            raise _tampered(self.storage.uri(snapshot.key), snapshot)
        return data

    def read(self, ref: str | Snapshot) -> tuple[Snapshot, pd.DataFrame]:
        snapshot = ref if isinstance(ref, Snapshot) else self.resolve(ref)
        data = self.read_bytes(snapshot)
        with activity(f"parsing {snapshot.ref} ({snapshot.rows:,} rows)"):
            return snapshot, parse_table(data, self.uri(snapshot))

    def get(self, ref: str | Snapshot, to: str | os.PathLike[str] | None = None) -> Path:
        """Copy a snapshot to a local file, verified and fsynced on the way; nothing is left behind if it fails.

        `to` is a file path or an existing folder; default `./<name>-<id>.<format>`.
        """
        import tempfile

        from mlops_template.storage.local import fsync_dir

        snapshot = ref if isinstance(ref, Snapshot) else self.resolve(ref)
        target = Path(to) if to is not None else Path.cwd()
        if target.is_dir() or str(to).endswith(("/", os.sep)):
            target = target / f"{snapshot.name}-{snapshot.id}.{snapshot.format}"
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
        os.fchmod(fd, 0o644)
        try:
            with (
                os.fdopen(fd, "wb") as out,
                self.storage.open_read(snapshot.key) as source,
                activity(f"copying {snapshot.ref} to {target.name}", total=snapshot.bytes) as advance,
            ):
                digest, _ = copy_hashing(source, out, advance)
                out.flush()
                os.fsync(out.fileno())
            if digest != snapshot.digest:
                raise _tampered(self.storage.uri(snapshot.key), snapshot)
            os.replace(tmp, target)
            fsync_dir(target.parent)
        finally:
            Path(tmp).unlink(missing_ok=True)
        return target


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


def _profile_file(path: Path, fmt: str) -> dict:
    from mlops_template.data.manifest import profile_file

    with activity(f"profiling {path.name}"):
        return profile_file(str(path), fmt)


class _Discard:
    """A sink that keeps nothing: hashing a stored file without writing it anywhere."""

    def write(self, data) -> int:
        return len(data)


def _tampered(uri: str, snapshot: Snapshot) -> IntegrityError:
    return IntegrityError(
        f"{uri}: its bytes no longer match snapshot {snapshot.ref} (changed or corrupted since it was stored); "
        f"`mlops data verify {snapshot.name} --repair` restores it from an intact copy, if one is left"
    )
