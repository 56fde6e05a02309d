"""Pipeline runs as a team asks about them: which ran, where, on what code, and what they made.

A run is named by its id, a unique prefix of at least 6 characters, `latest`
(the newest pipeline run) or `champion` (the pipeline run whose training made
the champion). A step run's name leads to its pipeline run.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from mlops_template.config.environ import scoped
from mlops_template.config.load import Config, Environment
from mlops_template.config.metrics import higher_is_better
from mlops_template.errors import RunError, choices
from mlops_template.models.registry import CHAMPION
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

    from mlops_template.tracking.reader import Reader

TRAINING_STEP = "train_model"
MIN_PREFIX = 6
STATUSES = ("RUNNING", "FINISHED", "FAILED", "KILLED", "SCHEDULED")


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
    if sort is not None:
        result = sort_runs(result, sort)
    return result[:limit]


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


# -- naming a run ------------------------------------------------------------------------------


@dataclass(frozen=True)
class NamedRun:
    """The pipeline run a name leads to, and the step run when the name was a step run's."""

    pipeline: Run
    step: Run | None = None


def resolve_run(reader: Reader, config: Config, experiment_id: str | None, name: str) -> NamedRun:
    """The run `name` names in the project's experiment: an id, a unique prefix (≥ 6), `latest` or `champion`.

    Unknown, ambiguous (the candidates listed), too short, or another
    project's: a :class:`RunError` saying which and what to give instead.
    """
    if name == "latest":
        newest = reader.search([experiment_id], Where(has_tag=TAG_STEPS), limit=1) if experiment_id else []
        if not newest:
            raise RunError(f"project '{config.name}' has no pipeline runs yet; `mlops run` makes one")
        return NamedRun(newest[0])
    if name == "champion":
        return _champion_run(reader, config)
    wanted = name.lower()
    if not re.fullmatch(r"[0-9a-f]+", wanted):
        raise RunError(
            f"run '{name}' is not a run id; give an id or a prefix of ≥ {MIN_PREFIX} of its characters "
            "(`mlops runs` lists them), `latest` or `champion`"
        )
    if len(wanted) < MIN_PREFIX:
        raise RunError(f"run '{name}' is too short to name a run; give at least {MIN_PREFIX} characters of its id")
    found = reader.search([experiment_id], Where(id_prefix=wanted), limit=20) if experiment_id else []
    if not found:
        _refuse_foreign(reader, config, wanted, name)
        raise RunError(f"project '{config.name}' has no run '{name}'; `mlops runs` lists its pipeline runs")
    if len(found) > 1:
        candidates = ", ".join(sorted(_describe(r) for r in found))
        raise RunError(f"run '{name}' is ambiguous; it matches {candidates}; give more characters")
    return _named(reader, found[0], name)


def _describe(run: Run) -> str:
    step = run.data.tags.get(TAG_STEP)
    return f"{run.info.run_id} ({f'step {step}' if step else 'pipeline run'})"


def _named(reader: Reader, run: Run, name: str) -> NamedRun:
    parent_id = run.data.tags.get(TAG_PARENT)
    if parent_id and run.data.tags.get(TAG_STEP):
        parent = reader.get(parent_id)
        if parent is None:
            raise RunError(f"run '{name}': its pipeline run {parent_id} is not in this tracking store")
        return NamedRun(parent, run)
    if TAG_STEPS not in run.data.tags:
        raise RunError(
            f"run {run.info.run_id} is neither a pipeline run nor a step of one; give a run `mlops runs` lists"
        )
    return NamedRun(run)


def _champion_run(reader: Reader, config: Config) -> NamedRun:
    version = reader.alias(config.model.name, CHAMPION)
    if version is None:
        raise RunError(
            f"model '{config.model.name}' has no champion yet, so no run trained it; "
            "name a run by id or `latest` (`mlops runs`)"
        )
    if not version.run_id:
        raise RunError(f"champion v{version.version} of '{config.model.name}' names no run; it was registered by hand")
    run = reader.get(version.run_id)
    if run is None:
        raise RunError(
            f"champion v{version.version} of '{config.model.name}' was trained by run {version.run_id}, "
            "which this tracking store does not have"
        )
    return _named(reader, run, CHAMPION)


def _refuse_foreign(reader: Reader, config: Config, wanted: str, name: str) -> None:
    """A run of another experiment in the same store: say whose it is rather than 'unknown'."""
    others = [(i, n) for i, n in reader.experiments() if n != config.name]
    for start in range(0, len(others), 100):
        batch = dict(others[start : start + 100])
        found = reader.search(list(batch), Where(id_prefix=wanted), limit=1)
        if found:
            raise RunError(
                f"run '{name}' belongs to experiment '{batch[found[0].info.experiment_id]}', "
                f"not to project '{config.name}'; run the command in that project's folder (or --project DIR)"
            )
