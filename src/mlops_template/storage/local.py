"""A folder on the local disk: the embedded default for the `local` environment."""

from __future__ import annotations

import functools
import os
import posixpath
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from fsspec.implementations.local import LocalFileSystem

from ..errors import StorageError
from .base import Stage, Storage


class LocalStorage(Storage):
    stages_in_place = True

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = str(Path(root).resolve())
        self.fs = LocalFileSystem()

    def write_bytes(self, key: str, data: bytes) -> None:
        """Write to a temporary file beside the target, then rename it into place."""
        with self.stage(posixpath.dirname(key), target=key) as stage:
            stage.file.write(data)
            stage.commit(key)

    @contextmanager
    def stage(self, folder: str, target: str | None = None) -> Iterator[Stage]:
        """A hidden temporary file in `folder`; commit renames it into place, so readers never see half a file."""
        directory = Path(self.path(folder))
        named = Path(self.path(target)) if target else directory
        try:
            directory.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=directory, prefix=".incoming-", suffix=".tmp")
            os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; a published file gets the usual mode
        except OSError as exc:
            raise _write_error(directory, exc) from exc

        def publish(key: str) -> None:
            f.flush()
            target = Path(self.path(key))
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(tmp, target)

        try:
            with os.fdopen(fd, "wb") as f:
                yield Stage(f, publish)
        except OSError as exc:
            raise _write_error(named, exc) from exc
        finally:
            Path(tmp).unlink(missing_ok=True)  # gone already when committed

    def put_file(self, local_path: str | os.PathLike[str], key: str) -> None:
        """Copy in the kernel (copy_file_range: a reflink on filesystems that share blocks), then rename."""
        try:
            source = open(local_path, "rb")  # noqa: SIM115 (closed below; opened first so a missing file writes nothing)
        except FileNotFoundError as exc:
            raise StorageError(f"{local_path}: not found") from exc
        with source, self.stage(posixpath.dirname(key), target=key) as stage:
            _copy_in_kernel(source, stage.file)
            stage.commit(key)

    def holds_copy(self, key: str, source: str, digest: str) -> bool:
        """Same size, then the same digest (a memory-mapped hash: a fraction of what copying costs)."""
        from ..datasets import digest_file

        try:
            if os.path.getsize(self.path(key)) != os.path.getsize(self.path(source)):
                return False
            return digest_file(self.path(key)) == digest
        except OSError:
            return False

    def copy(self, source: str, target: str) -> None:
        self.put_file(self.path(source), target)


def _copy_in_kernel(source: IO[bytes], target: IO[bytes]) -> None:
    """Copy a whole file without passing its bytes through Python when the OS allows it."""
    try:
        while os.copy_file_range(source.fileno(), target.fileno(), 1 << 30):
            pass
    except (AttributeError, OSError):  # another OS, or a filesystem pair without support
        source.seek(0)
        target.seek(0)
        target.truncate()
        shutil.copyfileobj(source, target, 1 << 23)


@functools.cache
def _umask() -> int:
    """The process umask (read once: reading it means setting it)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _write_error(target: Path, exc: OSError) -> StorageError:
    return StorageError(
        f"{target}: cannot be written ({exc.strerror or exc}); check the folder's permissions and free space"
    )
