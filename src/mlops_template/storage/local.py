"""A folder on the local disk: the embedded default for the `local` environment."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from fsspec.implementations.local import LocalFileSystem

from ..errors import StorageError
from .base import Storage


class LocalStorage(Storage):
    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = str(Path(root).resolve())
        self.fs = LocalFileSystem()

    def write_bytes(self, key: str, data: bytes) -> None:
        """Write to a temporary file beside the target, then rename it into place."""
        target = Path(self.path(key))
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(data)
                os.replace(tmp, target)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
        except OSError as exc:
            raise StorageError(
                f"{target}: cannot be written ({exc.strerror or exc}); check the folder's permissions and free space"
            ) from exc
