"""What every part of a step's context works on: `StepContext` holds it, its halves (`proposal`, `sources`) use it."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mlops_template.config.load import Config, Environment
    from mlops_template.data.snapshots import SnapshotStore
    from mlops_template.pipeline.coordination import RunScope
    from mlops_template.pipeline.replay import Replay
    from mlops_template.storage import Storage


class StepState:
    """The state of one step run, as `StepContext` sets it."""

    step: str
    config: Config
    environment: Environment
    storage: Storage
    snapshots: SnapshotStore
    run_id: str
    scope: RunScope | None
    replay: Replay | None
    notes: list[str]
    log: logging.Logger
