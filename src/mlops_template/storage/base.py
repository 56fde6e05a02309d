"""The storage interface shared by every backend, built on an fsspec filesystem."""

from __future__ import annotations

import io
import os
import posixpath
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import PurePosixPath
from typing import IO, TYPE_CHECKING

from ..errors import StorageError

if TYPE_CHECKING:
    import fsspec
    import pandas as pd


class Storage:
    """Keys (``a/b.parquet``) under one root URI; subclasses supply the filesystem and atomic writes."""

    fs: fsspec.AbstractFileSystem
    root: str
    stages_in_place = False  # True where a staged file is written beside its target, so extra copies are cheap

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.uri('')!r})"

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

    def sizes(self, prefix: str) -> dict[str, int]:
        """Size in bytes of every file below `prefix`, by key; empty when the folder does not exist."""
        if not self.exists(prefix):
            return {}
        root = self.path("")
        found = self._call(self.fs.find, prefix, detail=True)
        return {posixpath.relpath(path, root): int(info["size"]) for path, info in found.items()}

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

    def holds_copy(self, key: str, source: str, digest: str) -> bool:
        """Whether `key` already holds the same bytes as `source` (whose BLAKE3 digest is `digest`), checked cheaply."""
        return False

    def copy(self, source: str, target: str) -> None:
        """Copy a stored file to another key, atomically (server-side on S3)."""
        self._call(self.fs.copy, source, self.path(target))

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

    def upload_dir(self, local_dir: str, prefix: str) -> None:
        """Copy a local folder's files under `prefix`, each file written atomically."""
        from pathlib import Path

        for file in sorted(Path(local_dir).rglob("*")):
            if file.is_file():
                self.write_bytes(f"{prefix}/{file.relative_to(local_dir).as_posix()}", file.read_bytes())

    # -- tables ----------------------------------------------------------------
    def read_table(self, key: str) -> pd.DataFrame:
        """Read a parquet or CSV file (by suffix) into a DataFrame."""
        return parse_table(self.read_bytes(key), self.uri(key))

    def write_table(self, key: str, df: pd.DataFrame) -> bytes:
        """Write a DataFrame as parquet, atomically; returns the bytes written (for hashing)."""
        buffer = io.BytesIO()
        df.to_parquet(buffer, index=False)
        data = buffer.getvalue()
        self.write_bytes(key, data)
        return data

    # -- errors ----------------------------------------------------------------
    def _call(self, fn, key: str, *args, **kwargs):
        """Call an fsspec method on a key, turning backend failures into one clear StorageError."""
        try:
            return fn(self.path(key), *args, **kwargs)
        except FileNotFoundError as exc:
            raise StorageError(f"{self.uri(key)}: not found; has the step that writes it run?") from exc
        except PermissionError as exc:
            raise StorageError(f"{self.uri(key)}: access denied; check the environment's credentials") from exc
        except StorageError:
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


def parse_table(data: bytes, uri: str) -> pd.DataFrame:
    """A DataFrame from a stored file's bytes: CSV when `uri` ends in .csv, else parquet."""
    import pandas as pd

    try:
        if uri.endswith(".csv"):
            return pd.read_csv(io.BytesIO(data))
        return pd.read_parquet(io.BytesIO(data))
    except Exception as exc:
        raise StorageError(f"{uri}: cannot be read as a table ({exc}); is the file complete?") from exc
