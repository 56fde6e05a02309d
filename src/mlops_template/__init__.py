"""mlops-template: tracked, reproducible ML pipelines with versioned data and a gated model registry."""

from __future__ import annotations

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
