"""Copies in and out of snapshots: a local file added, a snapshot from another environment, one out to a local file.

Every byte is hashed on its way and checked against the snapshot's digest
before it is published; an interrupted or mismatched copy leaves nothing behind.
"""

from __future__ import annotations

import os
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING

from mlops_template.data.hashing import copy_hashing, digest_file, short_id, stream_file, validate_name
from mlops_template.data.layout import PREFIX, Snapshot, current_key, data_key, file_format, manifest_key
from mlops_template.data.snapshots import Stored, tampered
from mlops_template.errors import IntegrityError, StorageError
from mlops_template.progress import activity

if TYPE_CHECKING:
    from mlops_template.data.snapshots import SnapshotStore


def copy_from(store: SnapshotStore, source: SnapshotStore, snapshot: Snapshot) -> Stored:
    """Bring a snapshot of another storage (another environment's) here, byte for byte, under the same id.

    Nothing is written when it is here already. Otherwise its bytes stream
    into a staged file, hashed on the way, and are published only if they
    match the digest; the stored copy is then read back and hashed again,
    and the manifest (the source's, unchanged) is written last, so an
    interrupted copy leaves nothing listed.
    """
    here = store._complete(snapshot.name, snapshot.digest)
    if here is not None and store._intact(here):
        return Stored(snapshot, written=False)
    if snapshot.partitioned:
        for key, part in zip(snapshot.part_keys, snapshot.partitions, strict=True):
            _copy_file(store, source, key, part["digest"], part["bytes"], snapshot)
    else:
        _copy_file(store, source, snapshot.key, snapshot.digest, snapshot.bytes, snapshot)
    manifest = source.storage.read_bytes(manifest_key(snapshot.name, snapshot.id))
    store.storage.write_bytes(manifest_key(snapshot.name, snapshot.id), manifest)
    return Stored(snapshot, written=True)


def _copy_file(
    store: SnapshotStore, source: SnapshotStore, key: str, digest: str, size: int, snapshot: Snapshot
) -> None:
    """One file of a snapshot from another storage to the same key here, verified before and after it lands."""
    with store.storage.stage(key.rsplit("/", 1)[0]) as stage:
        with (
            source.storage.open_read(key) as f,
            activity(f"copying {snapshot.ref}", total=size) as advance,
        ):
            copied, _ = copy_hashing(f, stage.file, advance)
        if copied != digest:
            raise tampered(source.storage.uri(key), snapshot)
        stage.commit(key)
    if store.stored_digest(key) != digest:
        store.storage.delete(key)
        raise IntegrityError(
            f"{store.storage.uri(key)}: the copy of snapshot {snapshot.ref} does not match its digest once stored; "
            "nothing was kept, check the storage and copy again"
        )


def get(store: SnapshotStore, ref: str | Snapshot, to: str | os.PathLike[str] | None = None) -> Path:
    """Copy a snapshot to a local file, verified and fsynced on the way; nothing is left behind if it fails.

    `to` is a file path or an existing folder; default `./<name>-<id>.<format>`.
    """
    import tempfile

    from mlops_template.storage.local import fsync_dir

    snapshot = ref if isinstance(ref, Snapshot) else store.resolve(ref)
    target = Path(to) if to is not None else Path.cwd()
    if snapshot.partitioned:
        return _get_parts(store, snapshot, target if to is not None else target / f"{snapshot.name}-{snapshot.id}")
    if target.is_dir() or str(to).endswith(("/", os.sep)):
        target = target / f"{snapshot.name}-{snapshot.id}.{snapshot.format}"
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    os.fchmod(fd, 0o644)
    try:
        with (
            os.fdopen(fd, "wb") as out,
            store.storage.open_read(snapshot.key) as source,
            activity(f"copying {snapshot.ref} to {target.name}", total=snapshot.bytes) as advance,
        ):
            digest, _ = copy_hashing(source, out, advance)
            out.flush()
            os.fsync(out.fileno())
        if digest != snapshot.digest:
            raise tampered(store.storage.uri(snapshot.key), snapshot)
        os.replace(tmp, target)
        fsync_dir(target.parent)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return target


def _get_parts(store: SnapshotStore, snapshot: Snapshot, target: Path) -> Path:
    """A partitioned snapshot as a local folder of its parts (into `target`, or a new folder in it if it exists)."""
    import shutil
    import tempfile

    from mlops_template.storage.local import fsync_dir

    if target.is_dir():
        target = target / f"{snapshot.name}-{snapshot.id}"
    if target.exists():
        raise StorageError(f"{target}: already exists; remove it or give another folder")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}."))
    try:
        for key, part in zip(snapshot.part_keys, snapshot.partitions, strict=True):
            with (
                open(tmp / part["file"], "wb") as out,  # noqa: PTH123
                store.storage.open_read(key) as source,
                activity(f"copying {snapshot.ref} {part['file']}", total=part["bytes"]) as advance,
            ):
                digest, _ = copy_hashing(source, out, advance)
                out.flush()
                os.fsync(out.fileno())
            if digest != part["digest"]:
                raise tampered(store.storage.uri(key), snapshot)
        tmp.chmod(0o755)
        os.replace(tmp, target)
        fsync_dir(target.parent)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def add_file(
    store: SnapshotStore,
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
    if before.st_size in {n for k, n in store.storage.sizes(folder).items() if k.endswith(f".{fmt}")}:
        with activity(f"hashing {path.name}"):
            snapshot = store._complete(name, digest_file(path))
        if snapshot is not None and store._intact(snapshot, repairing=False):
            store.set_current(snapshot)
            return Stored(snapshot, written=False)

    current = current_key(name, fmt)
    with ThreadPoolExecutor(1) as pool, ExitStack() as staged:
        profiling = pool.submit(_profile_file, path, fmt)
        try:
            stage = staged.enter_context(store.storage.stage(folder))
            # Where staging is in place (a local folder) the current copy is written in the same pass.
            copy = (
                staged.enter_context(store.storage.stage("datasets", current))
                if store.storage.stages_in_place
                else None
            )
            with activity(f"storing {path.name}", total=before.st_size) as advance:
                digest, size = stream_file(path, stage.file, *([copy.file] if copy else []), advance=advance)
            try:
                manifest = profiling.result()
            except Exception as exc:
                raise StorageError(f"{path}: cannot be read as {fmt} ({exc}); is it a complete {fmt} file?") from exc
            after = path.stat()
            if (size, after.st_size, after.st_mtime_ns) != (before.st_size, before.st_size, before.st_mtime_ns):
                raise StorageError(f"{path}: changed while it was being added; add it again once it is complete")
            snapshot = store._complete(name, digest)
            written = snapshot is None
            if snapshot is None or not store._intact(snapshot):
                stage.commit(data_key(name, short_id(digest), fmt))
            if snapshot is None:
                snapshot = store._finish(name, digest, fmt, size, manifest, run_id, step, str(path.resolve()))
            if copy is not None:
                copy.commit(current)
        except BaseException:
            profiling.cancel()
            raise
    if copy is None:
        store.set_current(snapshot)
    else:
        store._drop_other_formats(snapshot)
    return Stored(snapshot, written=written)


def _profile_file(path: Path, fmt: str) -> dict:
    from mlops_template.data.manifest import profile_file

    with activity(f"profiling {path.name}"):
        return profile_file(str(path), fmt)
