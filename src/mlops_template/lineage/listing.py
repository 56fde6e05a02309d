"""Pipeline runs as a team asks about them: which ran, where, on what code, and what they made.

`list_runs` answers `mlops runs`: the newest pipeline runs, or the best by a
training metric, with their gate decision and registered version. How a run
is named for the other questions is in :mod:`names`.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from mlops_template.config.environ import scoped
from mlops_template.config.load import Config, Environment
from mlops_template.config.metrics import higher_is_better
from mlops_template.errors import RunError, choices
from mlops_template.models.journal import settle_on_contact
from mlops_template.tracking.failures import store_errors
from mlops_template.tracking.reader import Where, open_reader
from mlops_template.tracking.tags import (
    TAG_ENVIRONMENT,
    TAG_GATE,
    TAG_GIT_COMMIT,
    TAG_GIT_DIRTY,
    TAG_PARENT,
    TAG_PIPELINE_RUN,
    TAG_STEP,
    TAG_STEPS,
)

if TYPE_CHECKING:
    from mlflow.entities import Run


TRAINING_STEP = "train_model"
STATUSES = ("RUNNING", "FINISHED", "FAILED", "KILLED", "SCHEDULED")
LOST = "LOST"  # shown for a RUNNING pipeline run whose steps stopped beating (see _lost)


@dataclass(frozen=True)
class PipelineRun:
    run_id: str
    key: str
    started: datetime
    status: str
    environment: str
    steps: list[str]
    git_commit: str
    git_dirty: str
    metrics: dict[str, float] = field(default_factory=dict)
    gate: str | None = None
    model_version: str | None = None

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["started"] = self.started.isoformat()
        return out


@scoped
def list_runs(
    config: Config,
    env: Environment,
    *,
    limit: int = 20,
    sort: str | None = None,
    status: str | None = None,
    step: str | None = None,
) -> list[PipelineRun]:
    """Pipeline runs with their training metrics and gate decision: the newest first, or the best by `sort`.

    `sort` orders every matching run by that training metric (the gate's
    direction: higher first, except for error metrics such as rmse), runs
    without it last, and only then keeps `limit`. `status` keeps runs in that
    state; `step` keeps pipeline runs that ran that step. A store that fails
    on the way raises :class:`TrackingError` naming it.
    """
    wanted = _check_status(status)
    step_tags = _step_tags(step) if step is not None else None
    with store_errors(env):
        settle_on_contact(config, env)
        reader, experiment_id = open_reader(config, env)
        if experiment_id is None:
            return []
        everything = sort is not None or step is not None
        parents = reader.search(
            [experiment_id], Where(has_tag=TAG_STEPS, status=wanted), limit=None if everything else limit
        )
        if step_tags is not None:
            ran = {r.data.tags.get(TAG_PARENT) for r in reader.search([experiment_id], Where(tags=step_tags))}
            parents = [p for p in parents if p.info.run_id in ran]
        lost = _lost(reader, experiment_id, parents)
        since = min((p.info.start_time or 0 for p in parents), default=0)
        trainings = (
            reader.search([experiment_id], Where(tags=_step_tags(TRAINING_STEP), since=since)) if parents else []
        )
    with store_errors(env, registry=True):
        versions = {v.run_id: str(v.version) for v in reader.versions(config.model.name)} if parents else {}
    training_of: dict[str, Run] = {}
    for run in sorted(trainings, key=lambda r: r.info.start_time or 0):  # the latest attempt wins
        training_of[run.data.tags.get(TAG_PARENT, "")] = run
    result = [_summary(p, training_of.get(p.info.run_id), versions) for p in parents]
    result = [replace(r, status=LOST) if r.run_id in lost else r for r in result]
    if sort is not None:
        result = sort_runs(result, sort)
    return result[:limit]


def _lost(reader, experiment_id: str, parents: list[Run]) -> set[str]:
    """The RUNNING pipeline runs whose running steps all stopped beating: their processes died or lost the server.

    The next `mlops run` in the environment marks those steps FAILED; until then
    MLflow still says RUNNING. A pipeline run waiting for its next step (no step
    running) is not lost.
    """
    import time

    from mlops_template.pipeline.coordination import last_beat, lease_seconds

    running = {p.info.run_id for p in parents if p.info.status == "RUNNING"}
    if not running:
        return set()
    lease, now = lease_seconds(), time.time()
    alive: dict[str, bool] = {}
    for step in reader.search([experiment_id], Where(has_tag=TAG_STEP, status="RUNNING")):
        parent = step.data.tags.get(TAG_PARENT, "")
        if parent in running:
            alive[parent] = alive.get(parent, False) or now - last_beat(step) <= lease
    return {parent for parent, beating in alive.items() if not beating}


def sort_runs(runs: list[PipelineRun], metric: str) -> list[PipelineRun]:
    """Best first by `metric` in the gate's direction, runs without it last (newest first among equals)."""
    sign = -1.0 if higher_is_better(metric) else 1.0
    newest = sorted(runs, key=lambda r: r.started, reverse=True)
    have = [r for r in newest if metric in r.metrics]
    have.sort(key=lambda r: sign * r.metrics[metric])
    return have + [r for r in newest if metric not in r.metrics]


def _check_status(status: str | None) -> str | None:
    if status is None:
        return None
    wanted = status.upper()
    if wanted not in STATUSES:
        raise RunError(f"run status '{status}' is unknown; {choices(STATUSES, wanted)}")
    return wanted


def _step_tags(step: str) -> dict[str, str]:
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", step):
        raise RunError(f"step name '{step}' is not valid; give a step of the pipeline, e.g. {TRAINING_STEP}")
    return {TAG_STEP: step}


def _summary(parent: Run, train: Run | None, versions: dict[str, str]) -> PipelineRun:
    tags = parent.data.tags
    return PipelineRun(
        run_id=parent.info.run_id,
        key=tags.get(TAG_PIPELINE_RUN, ""),
        started=datetime.fromtimestamp((parent.info.start_time or 0) / 1000, tz=UTC),
        status=parent.info.status,
        environment=tags.get(TAG_ENVIRONMENT, "?"),
        steps=tags.get(TAG_STEPS, "").split(","),
        git_commit=tags.get(TAG_GIT_COMMIT, "none"),
        git_dirty=tags.get(TAG_GIT_DIRTY, "unknown"),
        metrics=dict(train.data.metrics) if train else {},
        gate=train.data.tags.get(TAG_GATE) if train else None,
        model_version=versions.get(train.info.run_id) if train else None,
    )
