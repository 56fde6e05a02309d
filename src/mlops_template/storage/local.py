"""A folder on the local disk: the embedded default for the `local` environment.

Every write is atomic and durable: bytes go to a hidden temporary file (or
folder) beside the target, are fsynced, and are renamed into place; the
folder that holds the new name is fsynced too, so a power cut leaves the old
version or the new one, never half of one and never a name without its bytes.
"""

from __future__ import annotations

import errno
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

from mlops_template.errors import StorageError
from mlops_template.storage.base import Stage, Storage, already_there, files_to_upload


class LocalStorage(Storage):
    stages_in_place = True

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = str(Path(root).resolve())
        self.fs = LocalFileSystem()

    def check(self) -> None:
        """The folder exists or can be made, and a file can be written in it."""
        root = Path(self.root)
        try:
            make_dirs(root)
            with tempfile.NamedTemporaryFile(dir=root, prefix=".mlops-check-"):
                pass
        except OSError as exc:
            raise StorageError(
                f"storage {root}: cannot be written ({exc.strerror or exc}); "
                "point storage in mlops.toml / MLOPS_STORAGE at a folder this user can create and write"
            ) from exc

    def local_path(self, key: str) -> str | None:
        return self.path(key)

    def write_bytes(self, key: str, data: bytes) -> None:
        """Write to a temporary file beside the target, then rename it into place."""
        with self.stage(posixpath.dirname(key), target=key) as stage:
            stage.file.write(data)
            stage.commit(key)

    def create_bytes(self, key: str, data: bytes) -> bool:
        """Write and fsync a temporary file, then hard-link it to `key`: the link fails if `key` exists."""
        target = Path(self.path(key))
        try:
            make_dirs(target.parent)
            fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".incoming-", suffix=".tmp")
        except OSError as exc:
            raise _write_error(target, exc) from exc
        try:
            os.fchmod(fd, 0o666 & ~_umask())
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.link(tmp, target)
        except FileExistsError:
            return False
        except OSError as exc:
            raise _write_error(target, exc) from exc
        finally:
            Path(tmp).unlink(missing_ok=True)
        fsync_dir(target.parent)
        return True

    @contextmanager
    def stage(self, folder: str, target: str | None = None) -> Iterator[Stage]:
        """A hidden temporary file in `folder`; commit fsyncs it and renames it into place."""
        directory = Path(self.path(folder))
        named = Path(self.path(target)) if target else directory
        try:
            make_dirs(directory)
            fd, tmp = tempfile.mkstemp(dir=directory, prefix=".incoming-", suffix=".tmp")
            os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; a published file gets the usual mode
        except OSError as exc:
            raise _write_error(directory, exc) from exc

        def publish(key: str) -> None:
            f.flush()
            os.fsync(f.fileno())
            target = Path(self.path(key))
            make_dirs(target.parent)
            os.replace(tmp, target)
            fsync_dir(target.parent)
            if target.parent != directory:
                fsync_dir(directory)  # the temporary name left this folder

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

    def same_copy(self, key: str, source: str) -> bool | None:
        """False when the sizes differ (or either file is missing); True for the same file; else unknown."""
        try:
            mine, theirs = os.stat(self.path(key)), os.stat(self.path(source))
        except OSError:
            return False
        if (mine.st_dev, mine.st_ino) == (theirs.st_dev, theirs.st_ino):
            return True
        return None if mine.st_size == theirs.st_size else False

    def copy(self, source: str, target: str) -> None:
        self.put_file(self.path(source), target)

    def move(self, source: str, target: str) -> None:
        """A rename within the storage's file system, made durable."""
        origin, destination = Path(self.path(source)), Path(self.path(target))
        try:
            make_dirs(destination.parent)
            os.replace(origin, destination)
        except FileNotFoundError as exc:
            raise StorageError(f"{origin}: not found; was it removed meanwhile?") from exc
        except OSError as exc:
            raise _write_error(destination, exc) from exc
        fsync_dir(destination.parent)
        if destination.parent != origin.parent:
            fsync_dir(origin.parent)

    def upload_dir(self, local_dir: str | os.PathLike[str], prefix: str) -> None:
        """Copy a local folder to `prefix` all at once, refusing a `prefix` that exists.

        The files are copied into a hidden staging folder beside `prefix`,
        fsynced, and the folder is renamed into place: a reader sees every file
        or no folder at all. The rename itself refuses a non-empty target, so
        of two concurrent uploads to one prefix exactly one lands.
        """
        files = files_to_upload(local_dir)
        target = Path(self.path(prefix))
        if target.exists():
            raise already_there(self.uri(prefix))
        staging: Path | None = None
        try:
            make_dirs(target.parent)
            staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.incoming-"))
            staging.chmod(0o777 & ~_umask())  # mkdtemp makes 0700
            for relative in files:
                destination = staging / relative
                destination.parent.mkdir(parents=True, exist_ok=True)
                _copy_durably(Path(local_dir, relative), destination)
            for folder, _, _ in os.walk(staging, topdown=False):
                fsync_dir(folder)
            try:
                os.rename(staging, target)
            except OSError as exc:
                if exc.errno in (errno.EEXIST, errno.ENOTEMPTY):
                    raise already_there(self.uri(prefix)) from exc
                raise
            staging = None
            fsync_dir(target.parent)
        except OSError as exc:
            raise _write_error(target, exc) from exc
        finally:
            if staging is not None:
                shutil.rmtree(staging, ignore_errors=True)


def fsync_dir(path: str | os.PathLike[str]) -> None:
    """Flush a folder's entries to disk, so a name renamed into it survives a power cut."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def make_dirs(directory: Path) -> None:
    """Create a folder and its missing parents, each made durable in its parent."""
    missing = []
    while not directory.exists() and directory != directory.parent:
        missing.append(directory)
        directory = directory.parent
    for folder in reversed(missing):
        try:
            folder.mkdir()
        except FileExistsError:  # made meanwhile by another writer
            continue
        fsync_dir(folder.parent)


def _copy_durably(source: Path, target: Path) -> None:
    """Copy one file to a new path and fsync it."""
    with open(source, "rb") as src, open(target, "xb") as out:
        _copy_in_kernel(src, out)
        out.flush()
        os.fsync(out.fileno())


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
