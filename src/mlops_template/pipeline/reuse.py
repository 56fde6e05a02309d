"""Reusing a step: its key before it runs, the earlier attempt it may reuse, and the step run that reuses it.

The rules (what goes into a key, when a read is unchanged) are `cache`'s; this
module applies them to one step of a running pipeline.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mlops_template.config.load import Config, Environment
from mlops_template.pipeline import cache
from mlops_template.pipeline.coordination import RunScope, attempts, mark_lost, settle
from mlops_template.redact import redact_text
from mlops_template.tracking.failures import store_errors, store_failures
from mlops_template.tracking.tags import TAG_CACHE_KEY, TAG_CACHE_READS, TAG_STEP

if TYPE_CHECKING:
    from mlflow.entities import Run

    from mlops_template.pipeline.context import StepContext
    from mlops_template.pipeline.pipeline import Step
    from mlops_template.pipeline.runner import _Attempt as Attempt


@dataclass(frozen=True)
class Hit:
    """An earlier attempt to reuse, and the view of this pipeline run its reads were checked in."""

    run: Run
    view: cache.View


def step_key(step: Step, params: dict[str, Any], config: Config, env: Environment, packages: str | None) -> str | None:
    """The step's cache key, or None when it has none: a reproduction, or code the key cannot see whole."""
    if packages is None or cache.cacheable(step, config.package) is not None:
        return None
    return cache.step_key(step, params, config, env, packages)


def _view(config: Config, env: Environment, attempt: Attempt, step: str) -> cache.View:
    from mlops_template.data.snapshots import SnapshotStore
    from mlops_template.models import registry

    def champion() -> str:
        found = registry.champion(attempt.client, config.model.name)
        return str(found.version) if found is not None else "none"

    runs = attempts(attempt.client, attempt.experiment_id, attempt.parent.run_id)
    scope = RunScope(attempt.storage, attempt.parent.key, step, attempt.order, runs)
    model = config.model_in(env.name)
    return cache.View(scope, SnapshotStore(attempt.storage), config.root, champion, model)


def find(key: str, config: Config, env: Environment, attempt: Attempt, step: str) -> Hit | None:
    """An earlier attempt to reuse, its reads, and the view they were checked in; None on a miss."""
    view = _view(config, env, attempt, step)
    found = cache.find_hit(attempt.client, attempt.experiment_id, key, view.unchanged)
    return Hit(found[0], view) if found is not None else None


def record(ctx: StepContext, key: str, config: Config, client: Any) -> None:
    """Tag a finished attempt with its key and what it read, so a later one may reuse it."""
    import mlflow

    from mlops_template.models import registry

    reads = ctx._reads
    if ctx._proposal is not None:  # what training leaves depends on the champion it was judged against
        found = registry.champion(client, config.model.name)
        reads.model = str(found.version) if found is not None else "none"
    mlflow.set_tags({TAG_CACHE_KEY: key, TAG_CACHE_READS: reads.tag()})


def reuse(step: str, params: dict[str, Any], key: str, hit: Hit, env: Environment, attempt: Attempt) -> tuple[str, str]:
    """A step run that reuses an earlier attempt: its outputs (by snapshot id), metrics, datasets and tags.

    Returns the new step run's id and the id of the attempt that did the work.
    """
    import mlflow

    source, view = hit.run, hit.view
    origin = cache.origin(source)
    tags = {TAG_STEP: step, **attempt.git_tags, **cache.reused_tags(source), TAG_CACHE_KEY: key}
    run = mlflow.start_run(
        experiment_id=attempt.experiment_id, run_name=step, parent_run_id=attempt.parent.run_id, tags=tags
    )
    run_id = run.info.run_id
    try:
        with store_errors(env):
            if attempt.code is not None:
                attempt.code.record(attempt.client, run_id)
            mark_lost(attempt.client, view.scope.runs, step, run_id, attempt.lease, supersede=attempt.supersede)
            if attempt.parent.joined:
                settle(attempt.client, attempt.experiment_id, attempt.parent)
            if params:
                mlflow.log_params({k: redact_text(str(v)) for k, v in params.items()})
            if source.data.metrics:
                mlflow.log_metrics(source.data.metrics)
            if source.inputs is not None and source.inputs.dataset_inputs:
                attempt.client.log_inputs(run_id, datasets=list(source.inputs.dataset_inputs))
            view.adopt(source, attempt.parent.run_id)
            mlflow.end_run()
    except BaseException:
        try:
            mlflow.end_run("FAILED")
        except store_failures():
            pass
        raise
    return run_id, origin
