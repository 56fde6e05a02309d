"""Named datasets: valid names, where they are stored, and the content hash that identifies a version.

A version's id is the BLAKE3 hash of its stored bytes: cryptographic like
sha256, about four times faster per core (≈ 7 GB/s with AVX-512), so hashing
never costs more than copying. Ids are shown as their first 16 hex digits;
manifests keep the full digest, which is what loading verifies.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from typing import IO

from blake3 import blake3

from mlops_template.errors import StorageError

_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")
ID_LENGTH = 16
CHUNK = 8 << 20
_STREAM_CHUNK = 32 << 20
FORMATS = ("parquet", "csv")


def is_valid_name(name: str) -> bool:
    return isinstance(name, str) and bool(_NAME.fullmatch(name)) and ".." not in name


def validate_name(name: str) -> str:
    """Reject names that could escape the storage root or collide with its layout."""
    if not is_valid_name(name):
        raise StorageError(
            f"dataset name {name!r} is invalid; use letters, digits, '_', '.' and '-' "
            "(no '/', no '..', not starting with '.')"
        )
    return name


def short_id(digest: str) -> str:
    return digest[:ID_LENGTH]


def digest_bytes(data: bytes | memoryview) -> str:
    """The full hex digest of some bytes."""
    return blake3(data, max_threads=blake3.AUTO if len(data) > CHUNK else 1).hexdigest()


def content_id(data: bytes) -> str:
    """The id of a dataset version held in memory."""
    return short_id(digest_bytes(data))


def digest_file(path: str | os.PathLike[str]) -> str:
    """The full hex digest of a local file, read through a memory map (constant memory, all cores)."""
    hasher = blake3(max_threads=blake3.AUTO)
    if os.path.getsize(path):
        hasher.update_mmap(path)
    return hasher.hexdigest()


class HashingWriter:
    """A binary sink that hashes every byte on its way to the wrapped file: the id is known once the write ends."""

    def __init__(self, target: IO[bytes], advance: Callable[[int], None] | None = None) -> None:
        self._target = target
        self._hasher = blake3()
        self._advance = advance
        self.size = 0

    def write(self, data) -> int:
        self._hasher.update(data)
        self.size += len(data)
        if self._advance is not None:
            self._advance(len(data))
        return self._target.write(data)

    def tell(self) -> int:
        return self.size

    def flush(self) -> None:
        self._target.flush()

    def writable(self) -> bool:
        return True

    @property
    def closed(self) -> bool:
        return False

    def hexdigest(self) -> str:
        return self._hasher.hexdigest()


def stream_file(
    path: str | os.PathLike[str], target: IO[bytes], *copies: IO[bytes], advance: Callable[[int], None] | None = None
) -> tuple[str, int]:
    """Copy a local file into `target` (and any `copies`), hashing each chunk as it is written; returns digest, size.

    `advance` is told the bytes of each chunk once it is written (progress).

    The file is memory-mapped, so every chunk is hashed and written from the
    same pages without a copy into Python, and the hash of one chunk runs in a
    second thread while it is written (both release the GIL): about as fast as
    a kernel copy, in constant memory.
    """
    import mmap
    from concurrent.futures import ThreadPoolExecutor

    size = os.path.getsize(path)
    hasher = blake3()  # one thread: ~7 GB/s is ahead of the write, and the cores are busy profiling
    if size == 0:
        return hasher.hexdigest(), 0
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
        view = memoryview(mapped)
        try:
            with ThreadPoolExecutor(1) as pool:
                for start in range(0, size, _STREAM_CHUNK):
                    with view[start : start + _STREAM_CHUNK] as chunk:
                        hashing = pool.submit(hasher.update, chunk)
                        try:
                            for sink in (target, *copies):
                                sink.write(chunk)
                        finally:
                            hashing.result()
                        if advance is not None:
                            advance(len(chunk))
        finally:
            view.release()
    return hasher.hexdigest(), size


def copy_hashing(source: IO[bytes], target: IO[bytes], advance: Callable[[int], None] | None = None) -> tuple[str, int]:
    """Stream `source` into `target` chunk by chunk; returns the digest and size of the bytes written."""
    writer = HashingWriter(target, advance)
    buffer = bytearray(CHUNK)
    view = memoryview(buffer)
    while n := source.readinto(buffer):
        writer.write(view[:n])
    return writer.hexdigest(), writer.size


def digest_stream(source: IO[bytes], advance: Callable[[int], None] | None = None) -> str:
    """The digest of a stream's bytes, read chunk by chunk and kept nowhere."""
    return copy_hashing(source, _Discard(), advance)[0]


class _Discard:
    """A sink that keeps nothing: hashing a stored file without writing it anywhere."""

    def write(self, data) -> int:
        return len(data)
