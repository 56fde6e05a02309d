"""mlops-template: tracked, reproducible ML pipelines with versioned data and a gated model registry.

The public names load on first use, so `mlops` commands import only what they run.
"""

from __future__ import annotations

import importlib
import os
from typing import TYPE_CHECKING, Any

# Arrow's allocator (mimalloc) hands freed pages back to the OS after 10 ms, so a
# scan of a large file faults fresh pages in for every batch: ~0.2 s per 10 M rows
# here. Keeping them for a second lets batches reuse them. Read when Arrow loads;
# a value the user set wins.
os.environ.setdefault("MIMALLOC_PURGE_DELAY", "1000")

if TYPE_CHECKING:  # for type checkers and editors; `X as X` marks a re-export
    from .config import Config as Config
    from .config import Environment as Environment
    from .config import load_config as load_config
    from .context import StepContext as StepContext
    from .datadiff import diff_frames as diff_frames
    from .datadiff import diff_snapshots as diff_snapshots
    from .errors import MlopsError as MlopsError
    from .pipeline import Pipeline as Pipeline
    from .pipeline import Step as Step
    from .predictions import read_predictions as read_predictions
    from .snapshots import Snapshot as Snapshot
    from .snapshots import SnapshotStore as SnapshotStore
    from .snapshots import open_snapshots as open_snapshots
    from .targets import check_target as check_target
    from .targets import split_heldout as split_heldout

_HOME = {
    "Config": "config",
    "Environment": "config",
    "load_config": "config",
    "StepContext": "context",
    "diff_frames": "datadiff",
    "diff_snapshots": "datadiff",
    "MlopsError": "errors",
    "Pipeline": "pipeline",
    "Step": "pipeline",
    "read_predictions": "predictions",
    "Snapshot": "snapshots",
    "SnapshotStore": "snapshots",
    "open_snapshots": "snapshots",
    "check_target": "targets",
    "split_heldout": "targets",
}
__all__ = sorted(_HOME)


def __getattr__(name: str) -> Any:
    if name not in _HOME:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_HOME[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_HOME])
