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
    from mlops_template.config.load import Config as Config
    from mlops_template.config.load import Environment as Environment
    from mlops_template.config.load import load_config as load_config
    from mlops_template.data.diff import diff_frames as diff_frames
    from mlops_template.data.diff import diff_snapshots as diff_snapshots
    from mlops_template.data.layout import Snapshot as Snapshot
    from mlops_template.data.predictions import read_predictions as read_predictions
    from mlops_template.data.snapshots import SnapshotStore as SnapshotStore
    from mlops_template.data.snapshots import open_snapshots as open_snapshots
    from mlops_template.errors import MlopsError as MlopsError
    from mlops_template.models.sampling import training_rows as training_rows
    from mlops_template.models.targets import check_target as check_target
    from mlops_template.models.targets import split_heldout as split_heldout
    from mlops_template.pipeline.context import StepContext as StepContext
    from mlops_template.pipeline.pipeline import Pipeline as Pipeline
    from mlops_template.pipeline.pipeline import Step as Step
    from mlops_template.scheduler.airflow import write_dag as write_dag

_HOME = {
    "Config": "config.load",
    "Environment": "config.load",
    "load_config": "config.load",
    "StepContext": "pipeline.context",
    "diff_frames": "data.diff",
    "diff_snapshots": "data.diff",
    "MlopsError": "errors",
    "Pipeline": "pipeline.pipeline",
    "Step": "pipeline.pipeline",
    "read_predictions": "data.predictions",
    "Snapshot": "data.layout",
    "SnapshotStore": "data.snapshots",
    "open_snapshots": "data.snapshots",
    "check_target": "models.targets",
    "split_heldout": "models.targets",
    "training_rows": "models.sampling",
    "write_dag": "scheduler.airflow",
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
