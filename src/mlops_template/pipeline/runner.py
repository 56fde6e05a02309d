"""Run steps in pipeline order as one pipeline run: an MLflow parent run, found by its key, with a nested run per step."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from mlops_template.config.environ import give_up_quickly, scoped
from mlops_template.config.load import Config
from mlops_template.config.params import apply_overrides
from mlops_template.errors import ConfigError, MlopsError, StepError
from mlops_template.models.journal import settle_on_contact
from mlops_template.pipeline import cache as cache_rules
from mlops_template.pipeline import reuse
from mlops_template.pipeline.context import StepContext
from mlops_template.pipeline.coordination import (
    KEY_VARIABLE,
    Heartbeat,
    ParentRun,
    RunScope,
    attempts,
    check_key,
    fail_pending_models,
    lease_seconds,
    mark_lost,
    new_key,
    open_parent,
    settle,
    sweep_lost,
)
from mlops_template.pipeline.failure_log import record_failure
from mlops_template.pipeline.provenance import Provenance, capture
from mlops_template.pipeline.replay import Replay
from mlops_template.redact import redact_text, redacted_repr
from mlops_template.storage import open_storage
from mlops_template.tracking.connect import connect
from mlops_template.tracking.failures import describe_failure, server_lost, store_errors, store_failures
from mlops_template.tracking.mlflow_run import joins_launched_run, launched_run, point_launched_run
from mlops_template.tracking.tags import (
    TAG_ENVIRONMENT,
    TAG_LAUNCHED_BY,
    TAG_PIPELINE,
    TAG_REPRODUCES,
    TAG_STEP,
    TAG_STEPS,
)

if TYPE_CHECKING:
    from mlops_template.pipeline.pipeline import Pipeline


@dataclass
class StepResult:
    name: str
    run_id: str
    status: str  # FINISHED or FAILED
    seconds: float
    error: str | None = None
    notes: list[str] = field(default_factory=list)
    cached_from: str | None = None  # the earlier attempt whose outputs this step reused instead of running


@redacted_repr
@dataclass
class PipelineResult:
    run_id: str
    experiment_id: str
    environment: str
    tracking_uri: str
    planned: list[str] = field(default_factory=list)  # the steps this call runs, in order
    steps: list[StepResult] = field(default_factory=list)
    key: str = ""  # the pipeline run's key (tag mlops.pipeline_run)
    plan: list[str] = field(default_factory=list)  # every step the pipeline run plans, across processes
    joined: bool = False  # the pipeline run was started earlier, by this key
    status: str = "RUNNING"  # the pipeline run's status once this call's steps are done

    @property
    def ok(self) -> bool:
        return all(s.status == "FINISHED" for s in self.steps)


# Called once when the pipeline run has started (step None), then after each step.
OnStep = Callable[[PipelineResult, StepResult | None], None]


@scoped
def run_pipeline(
    pipeline: Pipeline,
    config: Config,
    *,
    steps: Sequence[str] | None = None,
    environment: str | None = None,
    overrides: dict[str, Any] | None = None,
    on_step: OnStep | None = None,
    pipeline_run: str | None = None,
    plan: Sequence[str] | None = None,
    supersede: bool = False,
    replay: Replay | None = None,
    cache: bool = True,
    force: Sequence[str] = (),
) -> PipelineResult:
    """Run the chosen steps (default: all) and return what happened.

    With `pipeline_run` (or `MLOPS_PIPELINE_RUN`), the steps join the pipeline
    run of that key, created by whichever process comes first; without one, a
    fresh key starts a new pipeline run. `plan` names every step the pipeline
    run will have (default: the whole pipeline when joining by key, else the
    steps run here); the parent run is FINISHED once each planned step's latest
    attempt finished, FAILED while one's latest attempt failed.

    Everything a user can get wrong (step names, plan, key, environment,
    params) is checked before a run is created. A failing step marks its run
    FAILED and raises :class:`StepError` naming the step, the error and where
    its full traceback was saved.

    The code's commit and uncommitted diff, the installed packages, Python and
    the platform are recorded on the pipeline run and on each step run
    (:mod:`provenance`). `replay` makes the run a reproduction of a past one
    (:mod:`replay`).

    A step whose code, params, settings, packages and inputs are those of an
    earlier finished attempt is reused, not run (:mod:`cache`), unless `cache`
    is false, the step is in `force`, or `mlops.toml` turns caching off for it.
    """
    import mlflow

    selected = pipeline.select(steps)
    forced = {s.name for s in pipeline.select(list(force))} if force else set()
    key = pipeline_run or os.environ.get(KEY_VARIABLE) or None
    if key is not None:
        check_key(key)
    planned = _plan(pipeline, selected, plan, keyed=key is not None and bool(steps))
    _check_gate_metric(config)
    lease = lease_seconds()
    with launched_run() as launched:
        env = config.environment(environment)
        params = apply_overrides({s.name: config.step_params(s.name) for s in selected}, overrides or {})
        storage = open_storage(env, check=True)
        experiment_id = connect(config, env)
        code = capture(replay.code_root if replay else config.root)
        client = mlflow.MlflowClient()
        with store_errors(env):
            settle_on_contact(config, env, storage)  # registrations an earlier process left in flight

        tags = {TAG_PIPELINE: config.name, TAG_ENVIRONMENT: env.name, TAG_STEPS: ",".join(planned), **code.tags}
        if replay is not None:
            tags[TAG_REPRODUCES] = replay.reproduces
        # Under `mlflow run`, MLflow has already created a run for this process. In the project's
        # store and experiment it is the pipeline run; anywhere else (MLflow's ./mlflow.db, another
        # experiment) the pipeline run starts here as usual and MLflow's run points at it.
        joined = launched is not None and joins_launched_run(launched, experiment_id)
        if launched is not None and not joined:
            tags[TAG_LAUNCHED_BY] = launched.run_id
        with store_errors(env):
            parent = open_parent(
                client,
                storage,
                experiment_id,
                key or new_key(),
                plan=planned,
                plan_given=plan is not None,
                tags=tags,
                run_id=launched.run_id if joined else None,
            )
            if not parent.joined:
                code.record(client, parent.run_id)
        if launched is not None and not joined:
            point_launched_run(launched, parent.run_id, config, env)
        missing = [s.name for s in selected if s.name not in parent.plan]
        if missing:
            raise ConfigError(
                f"pipeline run '{parent.key}' plans {','.join(parent.plan)}; step {','.join(missing)} is not in it: "
                "use a new key, or run the planned steps"
            )
        result = PipelineResult(
            parent.run_id,
            experiment_id,
            env.name,
            env.tracking_uri,
            [s.name for s in selected],
            key=parent.key,
            plan=list(parent.plan),
            joined=parent.joined,
        )
        report = (lambda step: on_step(result, step)) if on_step else (lambda step: None)
        report(None)
        attempt = _Attempt(
            client, experiment_id, parent, storage, pipeline.names, code.tags, lease, code, replay, supersede
        )
        if replay is None:
            attempt.packages = cache_rules.packages_digest(config.root, code.packages_hash)
            attempt.reuse = cache
            attempt.forced = forced
        try:
            for step in selected:
                result.steps.append(_run_step(step, params[step.name], config, env, attempt, report))
        except BaseException:
            try:  # the step's own error is the one to report; a store failing here too must not hide it
                result.status = settle(client, experiment_id, parent)
                sweep_lost(client, experiment_id, lease, parent.run_id)
            except store_failures():
                pass
            raise
        with store_errors(env):
            sweep_lost(client, experiment_id, lease, parent.run_id)  # step runs of other processes that died
            result.status = settle(client, experiment_id, parent)
        if env.validation != "off":
            from mlops_template.data.snapshots import SnapshotStore
            from mlops_template.data.validation import unused_schemas

            for warning in unused_schemas(config.package, SnapshotStore(storage).names):
                logging.getLogger("mlops_template").warning(warning)
    return result


def _plan(pipeline: Pipeline, selected: list, plan: Sequence[str] | None, *, keyed: bool) -> list[str]:
    """The steps the pipeline run plans: `plan` as given, the whole pipeline for keyed steps, else those run here."""
    if plan is None:
        return pipeline.names if keyed else [s.name for s in selected]
    names = [s.name for s in pipeline.select(list(plan))]
    outside = [s.name for s in selected if s.name not in names]
    if outside:
        raise ConfigError(f"step {','.join(outside)} is not in --plan {','.join(plan)}; add it to the plan")
    return names


@dataclass
class _Attempt:
    """What every step attempt of this call shares: the store, the parent run, the lease."""

    client: Any
    experiment_id: str
    parent: ParentRun
    storage: Any
    order: list[str]
    git_tags: dict[str, str]  # every provenance tag, the git ones among them
    lease: float
    code: Provenance | None = None  # recorded on each step run
    replay: Replay | None = None
    supersede: bool = False
    packages: str | None = None  # the locked package set, for step keys; None: no step is keyed (a reproduction)
    reuse: bool = True  # whether a step may be reused from an earlier attempt
    forced: set[str] = field(default_factory=set)  # steps run whatever the cache holds


def _check_gate_metric(config: Config) -> None:
    """An unknown scorer name is found before the run starts, not after training."""
    from mlops_template.models.scoring import check_scorer

    for where, model in (
        ("model", config.model),
        *((f"environments.{e}.model", m) for e, m in config.environment_models.items()),
    ):
        try:
            check_scorer(model.gate.metric)
        except ValueError as exc:
            raise ConfigError(f"{config.path}: [{where}.gate] metric {exc}") from exc


def _run_step(step, params, config, env, attempt: _Attempt, report) -> StepResult:
    """One step attempt as a nested run: FINISHED, or FAILED with the step's own error raised as a StepError."""
    import mlflow

    started = time.perf_counter()
    key = reuse.step_key(step, params, config, env, attempt.packages)
    if key is not None and attempt.reuse and step.name not in attempt.forced and config.caches(step.name, env):
        with store_errors(env):
            hit = reuse.find(key, config, env, attempt, step.name)
        if hit is not None:
            run_id, origin = reuse.reuse(step.name, params, key, hit, env, attempt)
            note = f"cached (run {origin[:8]})"
            seconds = time.perf_counter() - started
            result = StepResult(step.name, run_id, "FINISHED", seconds, notes=[note], cached_from=origin)
            report(result)
            return result
    tags = {TAG_STEP: step.name, **attempt.git_tags}
    run = mlflow.start_run(
        experiment_id=attempt.experiment_id, run_name=step.name, parent_run_id=attempt.parent.run_id, tags=tags
    )
    try:
        ctx = _attempt_step(step, params, config, env, attempt, report, run, started)
    except BaseException:
        try:  # the step's error is the one to report: a store failing here too must not replace it
            mlflow.end_run("FAILED")
            fail_pending_models(attempt.client, attempt.experiment_id, [run.info.run_id])
        except store_failures():
            pass
        raise
    with store_errors(env):
        if key is not None:
            reuse.record(ctx, key, config, attempt.client)
        mlflow.end_run()
    result = StepResult(step.name, run.info.run_id, "FINISHED", time.perf_counter() - started, notes=ctx.notes)
    report(result)
    return result


def _attempt_step(step, params, config, env, attempt: _Attempt, report, run, started: float) -> StepContext:
    """The body of a step attempt in its (active) run; returns its context once the step has succeeded."""
    import mlflow

    with store_errors(env):
        if attempt.code is not None:
            attempt.code.record(attempt.client, run.info.run_id)
        runs = attempts(attempt.client, attempt.experiment_id, attempt.parent.run_id)
        mark_lost(attempt.client, runs, step.name, run.info.run_id, attempt.lease, supersede=attempt.supersede)
        if attempt.parent.joined:
            settle(attempt.client, attempt.experiment_id, attempt.parent)
    if params:
        mlflow.log_params({key: redact_text(str(value)) for key, value in params.items()})
    ctx = StepContext(
        step=step.name,
        params=params,
        config=config,
        environment=env,
        storage=attempt.storage,
        run_id=run.info.run_id,
        pipeline_run_id=attempt.parent.run_id,
        scope=RunScope(attempt.storage, attempt.parent.key, step.name, attempt.order, runs),
        replay=attempt.replay,
    )
    with Heartbeat(attempt.client, run.info.run_id, attempt.lease):
        try:
            step(ctx)
            ctx._finish()
        except Exception as exc:  # whatever the step's own code raises fails the step, its traceback kept
            lost = server_lost(exc)
            if lost:
                give_up_quickly()  # what is left to record must not wait on the lost server again and again
            where = record_failure(ctx, exc, config, attempt.parent.run_id, step.name)
            seconds = time.perf_counter() - started
            report(StepResult(step.name, run.info.run_id, "FAILED", seconds, str(exc), notes=ctx.notes))
            if lost:
                detail = describe_failure(env, exc)
            else:
                detail = str(exc) if isinstance(exc, MlopsError) else f"{type(exc).__name__}: {exc}"
            raise StepError(f"step '{step.name}' failed: {detail} ({where})") from exc
    return ctx
