"""A spy on the calls that make local writes durable: os.fsync and the renames that publish a file.

A spy, because what fsync guards against, a power cut between a rename and
the disk's write-back, cannot be simulated in a test: what can be checked is
that the file and its folder are flushed, and in which order.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest


def record_disk_events(monkeypatch: pytest.MonkeyPatch) -> list[tuple]:
    """From now on, every os.fsync (by the inode it flushed) and every rename (by its target), in order."""
    events: list[tuple] = []
    real_fsync = os.fsync

    def fsync(fd):
        info = os.fstat(fd)
        events.append(("fsync", (info.st_dev, info.st_ino)))
        return real_fsync(fd)

    def renaming(real):
        def rename(src, dst, *args, **kwargs):
            result = real(src, dst, *args, **kwargs)
            events.append(("rename", Path(dst)))
            return result

        return rename

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", renaming(os.replace))
    monkeypatch.setattr(os, "rename", renaming(os.rename))
    return events


def inode(path: Path) -> tuple[int, int]:
    info = path.stat()
    return info.st_dev, info.st_ino


def assert_landed_durably(events: list[tuple], target: Path) -> None:
    """`target` was fsynced (under its temporary name) before it was renamed into place, and its folder after."""
    renames = [i for i, event in enumerate(events) if event == ("rename", target)]
    assert len(renames) == 1, f"{target} was renamed into place {len(renames)} times"
    before, after = events[: renames[0]], events[renames[0] + 1 :]
    assert ("fsync", inode(target)) in before, f"{target} was not fsynced before its rename"
    assert ("fsync", inode(target.parent)) in after, f"{target.parent} was not fsynced after the rename"
