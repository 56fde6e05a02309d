"""Re-run a past pipeline run from its records and say whether it came out the same.

The run's commit is checked out in a temporary git worktree (its recorded
uncommitted diff applied when it was dirty) for the code only: data and
tracking stay the project's own environment's. Each step reads exactly the
snapshots the run's step read, with the params it recorded, in a new pipeline
run tagged `mlops.reproduces`; a `predict` loads the model version the run
used. Every metric and output snapshot id is then compared with the
original's. Nothing is registered unless asked for, and no dataset's current
version moves.

Everything that would make the reproduction impossible (no such run, no
commit, a commit or snapshot gone, a diff not recorded) is found before
anything is written.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlops_template import vcs
from mlops_template.config.environ import scope
from mlops_template.config.load import Config, StepConfig
from mlops_template.errors import MlopsError, RunError, VcsError, choices
from mlops_template.lineage.checkout import pipeline_at, worktree
from mlops_template.lineage.names import resolve_run
from mlops_template.lineage.show import dataset_refs, load_run
from mlops_template.pipeline.provenance import (
    DIFF_ARTIFACT,
    ENVIRONMENT_ARTIFACT,
    NOT_RECORDED,
    check_diff,
    installed_packages,
)
from mlops_template.pipeline.replay import Replay
from mlops_template.tracking.connect import connect
from mlops_template.tracking.failures import store_errors
from mlops_template.tracking.reader.mlflow import MlflowReader
from mlops_template.tracking.tags import (
    TAG_GIT_COMMIT,
    TAG_GIT_DIFF,
    TAG_GIT_DIFF_SHA256,
    TAG_GIT_DIRTY,
    TAG_MODEL_VERSION,
    TAG_STEP,
)

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities import Run

    from mlops_template.pipeline.runner import OnStep

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Check:
    """One compared value: a metric, or the snapshot id of an output."""

    step: str
    kind: str  # metric | output
    name: str
    original: Any
    reproduced: Any
    match: bool


@dataclass
class Reproduction:
    original: str  # the pipeline run reproduced
    run_id: str  # the new pipeline run
    commit: str
    applied_diff: bool
    steps: list[str]
    checks: list[Check] = field(default_factory=list)
    packages: list[tuple[str, str | None, str | None]] = field(default_factory=list)  # name, recorded, installed

    @property
    def matched(self) -> bool:
        return all(c.match for c in self.checks)

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "matched": self.matched}


@dataclass(frozen=True)
class _Plan:
    """What the reproduction needs, all checked before anything runs."""

    originals: dict[str, Run]  # step → its latest finished attempt in the run
    commit: str
    diff: bytes | None
    params: dict[str, dict[str, str]]
    reads: dict[str, dict[str, str]]
    models: dict[str, str]
    packages: dict[str, str] | None


def reproduce(
    config: Config,
    name: str,
    *,
    environment: str | None = None,
    steps: Sequence[str] = (),
    tolerance: float = 0.0,
    register: bool = False,
    on_step: OnStep | None = None,
) -> Reproduction:
    """Reproduce run `name` (id, prefix, `latest`, `champion`; a step run's name reproduces that step).

    A metric matches when it is
    within `tolerance` (absolute) of the original; an output when its snapshot
    id is the same. Raises :class:`RunError` (or another MlopsError) when the
    run cannot be reproduced, before anything is written.
    """
    import mlflow

    from mlops_template.data.snapshots import open_snapshots
    from mlops_template.pipeline.runner import run_pipeline

    if tolerance < 0 or math.isnan(tolerance):
        raise RunError(f"--tolerance {tolerance} is not a number ≥ 0; give e.g. 0 (exact) or 1e-6")
    with scope():
        env = config.environment(environment)
        experiment_id = connect(config, env)
        client = mlflow.MlflowClient()
        with store_errors(env):
            reader = MlflowReader(client)
            named = resolve_run(reader, config, experiment_id, name)
            loaded = load_run(reader, experiment_id, named)
            wanted = list(steps) or ([named.step.data.tags[TAG_STEP]] if named.step is not None else [])
            plan = _plan(reader, config, named.pipeline.info.run_id, loaded.latest, wanted)
        _check_snapshots(open_snapshots(config, env), named.pipeline.info.run_id, plan.reads)
        _check_models(client, config, plan.models)
        repo = _repository(config.root)
        _check_commit(repo, plan.commit, named.pipeline.info.run_id)
    order = list(plan.originals)
    with worktree(repo, plan.commit, plan.diff) as tree:
        code_root = tree / config.root.resolve().relative_to(repo)
        with pipeline_at(config, code_root) as pipeline:
            replay = Replay(named.pipeline.info.run_id, code_root, plan.reads, plan.models, register)
            result = run_pipeline(
                pipeline,
                _with_params(config, code_root, plan.params),
                steps=order,
                environment=env.name,
                on_step=on_step,
                replay=replay,
            )
    with scope():
        connect(config, env)
        with store_errors(env):
            new = {s.name: client.get_run(s.run_id) for s in result.steps}
    checks = [c for step in order for c in _compare(step, plan.originals[step], new[step], tolerance)]
    differing = package_differences(plan.packages)
    return Reproduction(
        original=named.pipeline.info.run_id,
        run_id=result.run_id,
        commit=plan.commit,
        applied_diff=bool(plan.diff),
        steps=order,
        checks=checks,
        packages=differing,
    )


# -- checks before anything runs ---------------------------------------------------------------


def _plan(reader: MlflowReader, config: Config, run_id: str, latest: dict[str, Run], wanted: list[str]) -> _Plan:
    finished = {s: r for s, r in latest.items() if r.info.status == "FINISHED"}
    for step in wanted:
        if step not in latest:
            raise RunError(f"run {run_id} has no step '{step}'; {choices(latest, step)}")
        if step not in finished:
            raise RunError(
                f"step '{step}' of run {run_id} did not finish ({latest[step].info.status}), "
                "so there is nothing to compare with; reproduce a step that finished"
            )
    chosen = wanted or list(finished)
    if not chosen:
        raise RunError(f"run {run_id} has no finished step to reproduce")
    originals = {s: finished[s] for s in sorted(chosen, key=lambda s: finished[s].info.start_time or 0)}
    commits = {
        (r.data.tags.get(TAG_GIT_COMMIT, "none"), r.data.tags.get(TAG_GIT_DIRTY, "unknown")) for r in originals.values()
    }
    if len(commits) > 1:
        raise RunError(
            f"the steps of run {run_id} ran on different code ({', '.join(sorted(c for c, _ in commits))}); "
            "reproduce them one at a time with --step"
        )
    [(commit, dirty)] = commits
    if commit == "none":
        raise RunError(
            f"run {run_id} was made outside a git repository ({TAG_GIT_COMMIT}=none), so its code cannot be found; "
            "commit the project's code and make a new run"
        )
    if not vcs.is_commit(commit):
        raise RunError(f"run {run_id} records {TAG_GIT_COMMIT}={commit[:80]!r}, not a commit SHA; make a new run")
    first = next(iter(originals.values()))
    diff = None
    if dirty != "false":
        recorded = first.data.tags.get(TAG_GIT_DIFF)
        if dirty == "unknown" or recorded in (None, NOT_RECORDED):
            raise RunError(
                f"run {run_id} was made from a work tree whose uncommitted changes were not recorded "
                f"({TAG_GIT_DIFF}={recorded or 'missing'}), so its code cannot be rebuilt; commit changes before a run"
            )
        diff = reader.artifact(first.info.run_id, DIFF_ARTIFACT) if recorded != "0" else b""
        if diff is None:
            raise RunError(f"run {run_id}: its recorded diff ({DIFF_ARTIFACT}) is missing from its artifacts")
        check_diff(run_id, diff, first.data.tags.get(TAG_GIT_DIFF_SHA256))
    environment = reader.artifact(first.info.run_id, ENVIRONMENT_ARTIFACT)
    return _Plan(
        originals=originals,
        commit=commit,
        diff=diff,
        params={s: dict(r.data.params) for s, r in originals.items()},
        reads={s: {ref.name: ref.id for ref in dataset_refs(r)[0]} for s, r in originals.items()},
        models={s: r.data.tags[TAG_MODEL_VERSION] for s, r in originals.items() if TAG_MODEL_VERSION in r.data.tags},
        packages=_packages(environment),
    )


def _packages(environment: bytes | None) -> dict[str, str] | None:
    import json

    if environment is None:
        return None
    return json.loads(environment).get("packages")


def _check_snapshots(store, run_id: str, reads: dict[str, dict[str, str]]) -> None:
    """Every snapshot the steps will read is in storage with its bytes intact; else one line naming it."""
    from mlops_template.data.layout import manifest_key

    for step, names in reads.items():
        for name, snapshot_id in names.items():
            where = store.storage.uri(manifest_key(name, snapshot_id))
            missing = not store.storage.exists(manifest_key(name, snapshot_id))
            if not missing:
                snapshot = store.resolve(f"{name}:{snapshot_id}")
                if snapshot.partitioned:  # every one of its parts, listed at once
                    missing = not set(snapshot.part_keys) <= set(store.storage.list(snapshot.key))
                else:
                    missing = not store.storage.exists(snapshot.key)
                where = store.uri(snapshot)
            if missing:
                raise RunError(
                    f"snapshot {name}:{snapshot_id}, which step '{step}' of run {run_id} read, is missing from "
                    f"storage ({where}); restore it from a backup to reproduce the run"
                )
            if store.snapshot_digest(snapshot) != snapshot.digest:
                raise RunError(
                    f"snapshot {snapshot.ref}, which step '{step}' of run {run_id} read, no longer matches its id "
                    f"({where}); `mlops data verify {name} --repair` restores it from an intact copy, if one is left"
                )


def _check_models(client: MlflowClient, config: Config, models: dict[str, str]) -> None:
    from mlops_template.models import registry

    for version in set(models.values()):
        registry.version(client, config.model.name, version)


def _repository(root: Path) -> Path:
    try:
        return vcs.toplevel(root)
    except VcsError as exc:
        raise RunError(
            f"{root} is not in a git repository (or git is missing), so a past commit cannot be checked out; "
            "run the command in the project's repository"
        ) from exc


def _check_commit(repo: Path, commit: str, run_id: str) -> None:
    if not vcs.has_commit(repo, commit):
        raise RunError(
            f"commit {commit[:12]} of run {run_id} is no longer in the repository at {repo}; "
            "fetch it (`git fetch --all`) or restore the branch that had it"
        )


# -- running it -------------------------------------------------------------------------------


def _with_params(config: Config, code_root: Path, recorded: dict[str, dict[str, str]]) -> Config:
    """The project's config with each step's params exactly as recorded (typed as the code's mlops.toml has them)."""
    from mlops_template.config.load import load_config
    from mlops_template.config.params import parse_value

    try:
        then = load_config(code_root)
    except MlopsError:
        then = None
    steps = dict(config.steps)
    for step, params in recorded.items():
        typed = then.step_params(step) if then is not None else {}
        values = {k: _typed(v, typed.get(k), parse_value) for k, v in params.items()}
        steps[step] = replace(config.steps.get(step, StepConfig()), params=values)
    return replace(config, params={}, steps=steps)


def _typed(text: str, example: Any, parse_value) -> Any:
    """A recorded param (MLflow keeps strings) as the value it was: typed like the config's value, else as TOML."""
    if example is not None and str(example) == text:
        return example
    if isinstance(example, bool):
        return text.lower() == "true"
    if isinstance(example, int):
        try:
            return int(text)
        except ValueError:
            pass
    if isinstance(example, float):
        try:
            return float(text)
        except ValueError:
            pass
    if isinstance(example, str):
        return text
    value = parse_value(text if text not in ("True", "False") else text.lower())
    return value


# -- comparing --------------------------------------------------------------------------------


def _compare(step: str, original: Run, new: Run, tolerance: float) -> list[Check]:
    checks = []
    mine, theirs = new.data.metrics, original.data.metrics
    for name in sorted(theirs.keys() | mine.keys()):
        a, b = theirs.get(name), mine.get(name)
        match = a is not None and b is not None and (a == b or abs(a - b) <= tolerance)
        checks.append(Check(step, "metric", name, a, b, match))
    before = {ref.name: ref.id for ref in dataset_refs(original)[1]}
    after = {ref.name: ref.id for ref in dataset_refs(new)[1]}
    for name in sorted(before.keys() | after.keys()):
        checks.append(
            Check(step, "output", name, before.get(name), after.get(name), before.get(name) == after.get(name))
        )
    return checks


def package_differences(recorded: dict[str, str] | None) -> list[tuple[str, str | None, str | None]]:
    if recorded is None:
        return []
    installed = installed_packages()
    differing = [
        (name, recorded.get(name), installed.get(name))
        for name in sorted(recorded.keys() | installed.keys())
        if recorded.get(name) != installed.get(name)
    ]
    if differing:
        logger.warning(
            "installed packages differ from those the run recorded: %s",
            ", ".join(f"{n} {a or '(none)'} → {b or '(none)'}" for n, a, b in differing),
        )
    return differing
