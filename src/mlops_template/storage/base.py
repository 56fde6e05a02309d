"""The storage interface shared by every backend, built on an fsspec filesystem."""

from __future__ import annotations

import os
import posixpath
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import PurePosixPath
from typing import IO, TYPE_CHECKING

from mlops_template.errors import StorageError

if TYPE_CHECKING:
    import fsspec


class Storage:
    """Keys (``a/b.parquet``) under one root URI; subclasses supply the filesystem and atomic writes."""

    fs: fsspec.AbstractFileSystem
    root: str
    stages_in_place = False  # True where a staged file is written beside its target, so extra copies are cheap

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.uri('')!r})"

    def check(self) -> None:
        """Raise :class:`StorageError` naming the problem and the fix when this storage cannot be used.

        A cheap probe made before anything is run or recorded, so that a wrong
        bucket, endpoint or credential fails in seconds with its real cause.
        """

    # -- paths -----------------------------------------------------------------
    def path(self, key: str) -> str:
        """The filesystem path of a key (no scheme)."""
        key = key.strip("/")
        if ".." in PurePosixPath(key).parts:
            raise StorageError(f"storage key '{key}' leaves the storage root; use a path without '..'")
        return posixpath.join(self.root, key) if key else self.root

    def uri(self, key: str) -> str:
        """The full URI of a key, as logged in MLflow and shown to users."""
        return self.path(key)

    # -- bytes -----------------------------------------------------------------
    def exists(self, key: str) -> bool:
        return self._call(self.fs.exists, key)

    def read_bytes(self, key: str) -> bytes:
        return self._call(self.fs.cat_file, key)

    def write_bytes(self, key: str, data: bytes) -> None:
        """Write a whole object so that readers see the old version or the new one, never half."""
        raise NotImplementedError

    def create_bytes(self, key: str, data: bytes) -> bool:
        """Write a whole object only if `key` does not exist yet; False, writing nothing, when it does.

        The check and the write are one step of the backend (a hard link
        locally, a conditional PUT on S3), so of writers racing for one key
        exactly one succeeds.
        """
        raise NotImplementedError

    def sizes(self, prefix: str) -> dict[str, int]:
        """Size in bytes of every file below `prefix`, by key; empty when the folder does not exist."""
        if not self.exists(prefix):
            return {}
        root = self.path("")
        found = self._call(self.fs.find, prefix, detail=True)
        return {posixpath.relpath(path, root): int(info["size"]) for path, info in found.items()}

    def etags(self, prefix: str) -> dict[str, str]:
        """A token per file below `prefix` that changes when its bytes do (S3's ETag; size and mtime elsewhere)."""
        if not self.exists(prefix):
            return {}
        root = self.path("")
        found = self._call(self.fs.find, prefix, detail=True)
        return {
            posixpath.relpath(path, root): str(info.get("ETag") or f"{info.get('size')}:{info.get('mtime')}")
            for path, info in found.items()
        }

    def list(self, prefix: str = "") -> list[str]:
        """Keys of the files below `prefix`, sorted; empty when the folder does not exist."""
        return sorted(self.sizes(prefix))

    def delete(self, key: str) -> None:
        if self.exists(key):
            self._call(self.fs.rm, key, recursive=True)

    def size(self, key: str) -> int:
        return int(self._call(self.fs.size, key))

    def read_many(self, keys: list[str]) -> dict[str, bytes]:
        """Several small files at once (concurrent requests on S3), by key."""
        if not keys:
            return {}
        try:
            found = self.fs.cat([self.path(k) for k in keys])
        except Exception:  # noqa: BLE001  (one failed: each key is read again alone, raising its own clear error)
            return {k: self.read_bytes(k) for k in keys}
        by_path = {self.path(k): k for k in keys}
        return {by_path[p]: data for p, data in found.items()}

    @contextmanager
    def open_read(self, key: str) -> Iterator[IO[bytes]]:
        """A binary stream over a stored file, for reading it in chunks."""
        f = self._call(self.fs.open, key, "rb")
        try:
            yield f
        finally:
            f.close()

    def local_path(self, key: str) -> str | None:
        """The key's file on this machine, for readers that map it into memory; None where storage is remote."""
        return None

    def same_copy(self, key: str, source: str) -> bool | None:
        """Whether `key` holds the same bytes as `source`, when the backend can tell without reading them.

        False or True when it can (sizes differ, same ETag); None when only
        reading both would tell, which is then up to the caller.
        """
        return None

    def copy(self, source: str, target: str) -> None:
        """Copy a stored file to another key, atomically (server-side on S3)."""
        self._call(self.fs.copy, source, self.path(target))

    def move(self, source: str, target: str) -> None:
        """Give a stored file another key: the target appears whole, then the source goes (a copy on S3)."""
        self.copy(source, target)
        self.delete(source)

    def fsspec_options(self) -> dict:
        """The `storage_options` by which readers of other libraries (Dask) reach these keys' URIs."""
        return {}

    @contextmanager
    def stage(self, folder: str, target: str | None = None) -> Iterator[Stage]:
        """A writable file whose bytes become visible only at `commit(key)`; discarded otherwise.

        For content-addressed files, whose key is known only once every byte was
        written. This default spools to a local temporary file and stores it on
        commit; backends that can stage in place (a local folder) override it.
        """
        import tempfile

        with tempfile.NamedTemporaryFile(prefix="mlops-stage-") as spool:
            stage = Stage(spool, lambda key: (spool.flush(), self.put_file(spool.name, key)))
            yield stage

    def put_file(self, local_path: str | os.PathLike[str], key: str) -> None:
        """Store a local file at `key`, atomically."""
        raise NotImplementedError

    def download(self, key: str, local_path: str) -> None:
        self._call(self.fs.get, key, local_path, recursive=True)

    def upload_dir(self, local_dir: str | os.PathLike[str], prefix: str) -> None:
        """Copy a local folder's files under `prefix`, all or nothing, refusing a `prefix` that exists.

        Each file is one atomic PUT, `MLmodel` (if there is one) last, so a
        reader that waits for it finds the rest in place. If any upload fails,
        the files already uploaded are deleted before the error is raised.
        """
        files = files_to_upload(local_dir)
        if self.sizes(prefix):
            raise already_there(self.uri(prefix))
        landed: list[str] = []
        try:
            for relative in files:
                key = f"{prefix}/{relative}"
                landed.append(key)  # before the PUT: one that fails after landing is deleted too
                self.put_file(os.path.join(local_dir, relative), key)
        except BaseException:
            for key in reversed(landed):
                try:
                    self.delete(key)
                except Exception:  # noqa: BLE001 - the first error is the one raised; cleanup is best effort
                    continue
            raise

    # -- errors ----------------------------------------------------------------
    def _call(self, fn, key: str, *args, **kwargs):
        """Call an fsspec method on a key, turning backend failures into one clear StorageError."""
        try:
            return fn(self.path(key), *args, **kwargs)
        except FileNotFoundError as exc:
            raise StorageError(f"{self.uri(key)}: not found; has the step that writes it run?") from exc
        except PermissionError as exc:
            raise StorageError(f"{self.uri(key)}: access denied; check the environment's credentials") from exc
        except (StorageError, FileExistsError):  # FileExistsError: a conditional write that lost, for the caller
            raise
        except Exception as exc:  # botocore/aiohttp failures carry many types
            raise StorageError(f"{self.uri(key)}: storage failed ({type(exc).__name__}: {exc})") from exc


class Stage:
    """A file being written; `commit(key)` publishes it at `key` (at most once)."""

    def __init__(self, file: IO[bytes], publish) -> None:
        self.file = file
        self._publish = publish
        self.committed: str | None = None

    def commit(self, key: str) -> None:
        self._publish(key)
        self.committed = key


def files_to_upload(local_dir: str | os.PathLike[str]) -> list[str]:
    """The relative paths of a folder's files, in upload order: sorted, a top-level `MLmodel` last."""
    from pathlib import Path

    folder = Path(local_dir)
    if not folder.is_dir():
        raise StorageError(f"{folder}: not a folder; give the folder to upload")
    files = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
    return sorted(files, key=lambda name: name == "MLmodel")


def already_there(uri: str) -> StorageError:
    return StorageError(f"{uri}: already exists and an upload never overwrites it; delete it first if it is stale")
