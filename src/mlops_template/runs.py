"""Pipeline runs as a team asks about them: which ran, where, on what code, and what they made."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

from .config import Config, Environment
from .environ import scoped
from .pipeline_runs import TAG_PIPELINE_RUN
from .tracking import (
    TAG_ENVIRONMENT,
    TAG_GATE,
    TAG_GIT_COMMIT,
    TAG_GIT_DIRTY,
    TAG_STEP,
    TAG_STEPS,
    connect,
    store_errors,
)


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


@scoped
def list_runs(config: Config, env: Environment, *, limit: int = 20) -> list[PipelineRun]:
    """The newest pipeline runs first, each with its training metrics and gate decision.

    A store that fails on the way raises :class:`TrackingError` naming it.
    """
    import mlflow

    experiment_id = connect(config, env)
    with store_errors(env):
        client = mlflow.MlflowClient()
        parents = client.search_runs(
            [experiment_id],
            filter_string=f"tags.`{TAG_STEPS}` != ''",
            order_by=["attributes.start_time DESC"],
            max_results=limit,
        )
        children_of = {
            parent.info.run_id: client.search_runs(
                [experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'"
            )
            for parent in parents
        }
    with store_errors(env, registry=True):
        versions = _versions_by_run(client, config.model.name)
    result = []
    for parent in parents:
        children = children_of[parent.info.run_id]
        trainings = [c for c in children if c.data.tags.get(TAG_STEP) == "train_model"]
        train = max(trainings, key=lambda c: c.info.start_time or 0, default=None)  # the latest attempt
        tags = parent.data.tags
        result.append(
            PipelineRun(
                run_id=parent.info.run_id,
                key=tags.get(TAG_PIPELINE_RUN, ""),
                started=datetime.fromtimestamp(parent.info.start_time / 1000, tz=UTC),
                status=parent.info.status,
                environment=tags.get(TAG_ENVIRONMENT, "?"),
                steps=tags.get(TAG_STEPS, "").split(","),
                git_commit=tags.get(TAG_GIT_COMMIT, "none"),
                git_dirty=tags.get(TAG_GIT_DIRTY, "unknown"),
                metrics=dict(train.data.metrics) if train else {},
                gate=train.data.tags.get(TAG_GATE) if train else None,
                model_version=versions.get(train.info.run_id) if train else None,
            )
        )
    return result


def _versions_by_run(client, name: str) -> dict[str, str]:
    """Registered version per training run; none while the model has never been registered."""
    from mlflow.exceptions import MlflowException

    try:
        return {v.run_id: str(v.version) for v in client.search_model_versions(f"name='{name}'")}
    except MlflowException as exc:
        if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
            return {}
        raise
