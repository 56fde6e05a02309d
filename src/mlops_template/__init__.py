"""mlops-template: tracked, reproducible ML pipelines with versioned data and a gated model registry."""

from __future__ import annotations

import os

# Arrow's allocator (mimalloc) hands freed pages back to the OS after 10 ms, so a
# scan of a large file faults fresh pages in for every batch: ~0.2 s per 10 M rows
# here. Keeping them for a second lets batches reuse them. Read when Arrow loads;
# a value the user set wins.
os.environ.setdefault("MIMALLOC_PURGE_DELAY", "1000")

from .config import Config, Environment, load_config
from .context import StepContext
from .datadiff import diff_frames, diff_snapshots
from .errors import MlopsError
from .pipeline import Pipeline, Step
from .snapshots import Snapshot, SnapshotStore, open_snapshots

__all__ = [
    "Config",
    "Environment",
    "MlopsError",
    "Pipeline",
    "Snapshot",
    "SnapshotStore",
    "Step",
    "StepContext",
    "diff_frames",
    "diff_snapshots",
    "load_config",
    "open_snapshots",
]
