"""One pipeline run's lineage, and what differs between two: the questions a team asks of its runs.

`describe` gathers what `mlops show` prints: each step's status, duration,
params and metrics, every snapshot read and written, the code and packages,
the gate's decision and the model it registered. `compare` joins two runs
for `mlops diff`: data first (a `mlops data diff` summary per dataset both
used), then code, params, metrics, packages and environment, the likely
causes of a metric change before the rest. Reproducing a run is in
:mod:`reproduce`.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlops_template import vcs
from mlops_template.config.environ import scoped
from mlops_template.config.load import Config, Environment
from mlops_template.errors import MlopsError, VcsError
from mlops_template.lineage.listing import TRAINING_STEP, NamedRun, resolve_run
from mlops_template.pipeline.provenance import DIFF_ARTIFACT, ENVIRONMENT_ARTIFACT, NOT_RECORDED
from mlops_template.tracking.connect import display_uri
from mlops_template.tracking.failures import store_errors
from mlops_template.tracking.reader import Where, open_reader
from mlops_template.tracking.tags import (
    TAG_DATA_CONTEXT,
    TAG_ENVIRONMENT,
    TAG_GATE,
    TAG_GATE_REASON,
    TAG_GIT_COMMIT,
    TAG_GIT_DIFF,
    TAG_GIT_DIRTY,
    TAG_MODEL_VERSION,
    TAG_OUTPUT_PREFIX,
    TAG_PACKAGES,
    TAG_PARENT,
    TAG_PIPELINE_RUN,
    TAG_PLATFORM,
    TAG_PYTHON,
    TAG_REPRODUCES,
    TAG_STEP,
    TAG_STEPS,
)

if TYPE_CHECKING:
    from mlflow.entities import Run

    from mlops_template.data.diff import DataDiff
    from mlops_template.data.snapshots import SnapshotStore
    from mlops_template.tracking.reader import Reader

logger = logging.getLogger(__name__)

PREDICTIONS = "predictions"


# -- one run ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class DataRef:
    """A snapshot (or the predictions table) a step read or wrote: its name, id, rows and where its bytes are."""

    name: str
    id: str
    rows: int | None
    uri: str
    context: str


@dataclass
class StepReport:
    name: str
    run_id: str
    status: str
    started: str
    seconds: float | None
    attempts: int
    params: dict[str, str]
    metrics: dict[str, float]
    reads: list[DataRef]
    writes: list[DataRef]
    commit: str
    dirty: str
    packages: str | None
    gate: str | None = None
    gate_reason: str | None = None
    model_version: str | None = None  # the registered version this step loaded (predict)


@dataclass
class ModelReport:
    name: str
    version: str
    aliases: list[str]
    registry_uri: str  # models:/<name>/<version>, in the registry below
    registry: str
    source: str
    storage_uri: str  # the exported copy for consumers without MLflow
    training_data: str


@dataclass
class RunReport:
    run_id: str
    key: str
    status: str
    started: str
    environment: str
    plan: list[str]
    code: dict[str, Any]
    steps: list[StepReport]
    model: ModelReport | None = None
    selected_step: str | None = None  # the run was named by one of its step runs
    reproduces: str | None = None

    def step(self, name: str) -> StepReport | None:
        return next((s for s in self.steps if s.name == name), None)

    def datasets(self) -> dict[str, str]:
        """Every snapshot the run used, by dataset name (the last step's if several used one name)."""
        found: dict[str, str] = {}
        for s in self.steps:
            for ref in (*s.reads, *s.writes):
                if ref.name != PREDICTIONS:
                    found[ref.name] = ref.id
        return found

    def training_metrics(self) -> dict[str, float]:
        step = self.step(TRAINING_STEP) or next((s for s in self.steps if s.gate), None)
        return dict(step.metrics) if step else {}

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class _Loaded:
    """A pipeline run read from the store: the parent, the latest attempt of each step, and attempt counts."""

    named: NamedRun
    latest: dict[str, Run]
    counts: dict[str, int]


def load_run(reader: Reader, experiment_id: str, named: NamedRun) -> _Loaded:
    """The pipeline run `named` leads to, with every attempt of its steps read once."""
    latest: dict[str, Run] = {}
    counts: dict[str, int] = {}
    found = reader.search([experiment_id], Where(tags={TAG_PARENT: named.pipeline.info.run_id}))
    for run in sorted(found, key=lambda r: (r.info.start_time or 0, r.info.run_id)):
        step = run.data.tags.get(TAG_STEP)
        if step:
            latest[step] = run  # oldest first, so the latest attempt stays
            counts[step] = counts.get(step, 0) + 1
    return _Loaded(named, latest, counts)


@scoped
def describe(config: Config, env: Environment, name: str) -> RunReport:
    """What `mlops show NAME` prints: one pipeline run, its steps, data, code and model."""
    with store_errors(env):
        reader, experiment_id = open_reader(config, env)
        named = resolve_run(reader, config, experiment_id, name)
        loaded = load_run(reader, named.pipeline.info.experiment_id, named)
    with store_errors(env, registry=True):
        return _report(reader, config, env, loaded)


def _report(reader: Reader, config: Config, env: Environment, loaded: _Loaded) -> RunReport:
    from mlops_template.storage import open_storage

    parent = loaded.named.pipeline
    tags = parent.data.tags
    plan = [s for s in tags.get(TAG_STEPS, "").split(",") if s]
    order = {s: i for i, s in enumerate(plan)}
    steps = sorted(
        (_step_report(run, loaded.counts[name]) for name, run in loaded.latest.items()),
        key=lambda s: (order.get(s.name, len(order)), s.started),
    )
    report = RunReport(
        run_id=parent.info.run_id,
        key=tags.get(TAG_PIPELINE_RUN, ""),
        status=parent.info.status,
        started=_when(parent.info.start_time),
        environment=tags.get(TAG_ENVIRONMENT, "?"),
        plan=plan,
        code=_code(tags),
        steps=steps,
        selected_step=loaded.named.step.data.tags.get(TAG_STEP) if loaded.named.step else None,
        reproduces=tags.get(TAG_REPRODUCES),
    )
    trained = report.step(TRAINING_STEP) or next((s for s in steps if s.gate), None)
    if trained is not None:
        report.model = _model(reader, config, env, trained.run_id, open_storage(env))
    return report


def _when(millis: int | None) -> str:
    return datetime.fromtimestamp((millis or 0) / 1000, tz=UTC).isoformat(timespec="seconds")


def _code(tags: dict[str, str]) -> dict[str, Any]:
    diff = tags.get(TAG_GIT_DIFF)
    return {
        "commit": tags.get(TAG_GIT_COMMIT, "none"),
        "dirty": tags.get(TAG_GIT_DIRTY, "unknown"),
        "diff_bytes": int(diff) if diff and diff.isdigit() else None,
        "diff": diff or NOT_RECORDED,
        "packages": tags.get(TAG_PACKAGES),
        "python": tags.get(TAG_PYTHON),
        "platform": tags.get(TAG_PLATFORM),
    }


def _step_report(run: Run, attempts_made: int) -> StepReport:
    tags = run.data.tags
    reads, writes = dataset_refs(run)
    end, start = run.info.end_time, run.info.start_time
    return StepReport(
        name=tags.get(TAG_STEP, "?"),
        run_id=run.info.run_id,
        status=run.info.status,
        started=_when(start),
        seconds=(end - start) / 1000 if end and start else None,
        attempts=attempts_made,
        params=dict(sorted(run.data.params.items())),
        metrics=dict(sorted(run.data.metrics.items())),
        reads=reads,
        writes=writes,
        commit=tags.get(TAG_GIT_COMMIT, "none"),
        dirty=tags.get(TAG_GIT_DIRTY, "unknown"),
        packages=tags.get(TAG_PACKAGES),
        gate=tags.get(TAG_GATE),
        gate_reason=tags.get(TAG_GATE_REASON),
        model_version=tags.get(TAG_MODEL_VERSION),
    )


def dataset_refs(run: Run) -> tuple[list[DataRef], list[DataRef]]:
    """The snapshots a step run read, and those it wrote (tagged `mlops.output.<name>`, or predictions)."""
    reads: dict[str, DataRef] = {}
    writes: dict[str, DataRef] = {}
    for entry in run.inputs.dataset_inputs if run.inputs else []:
        dataset = entry.dataset
        context = {t.key: t.value for t in entry.tags}.get(TAG_DATA_CONTEXT, "input")
        ref = DataRef(dataset.name, dataset.digest, _rows(dataset.profile), _source(dataset.source), context)
        written = run.data.tags.get(TAG_OUTPUT_PREFIX + dataset.name) == dataset.digest or context == "output"
        (writes if written else reads)[dataset.name] = ref
    return sorted(reads.values(), key=lambda r: r.name), sorted(writes.values(), key=lambda r: r.name)


def _rows(profile: str | None) -> int | None:
    try:
        return int(json.loads(profile or "{}").get("num_rows"))
    except (ValueError, TypeError):
        return None


def _source(source: str) -> str:
    try:
        return str(json.loads(source).get("uri", source))
    except (ValueError, AttributeError):
        return source


def _model(reader: Reader, config: Config, env: Environment, run_id: str, storage) -> ModelReport | None:
    from mlops_template.tracking.tags import TAG_TRAINING_DATA

    name = config.model.name
    versions = reader.versions(name, run_id)
    if not versions:
        return None
    version = max(versions, key=lambda v: int(v.version))
    aliases = reader.aliases(name)
    return ModelReport(
        name=name,
        version=str(version.version),
        aliases=sorted(a for a, v in aliases.items() if str(v) == str(version.version)),
        registry_uri=f"models:/{name}/{version.version}",
        registry=display_uri(env.registry_uri or env.tracking_uri),
        source=version.source,
        storage_uri=storage.uri(f"models/{name}/v{version.version}"),
        training_data=version.tags.get(TAG_TRAINING_DATA, ""),
    )


# -- two runs --------------------------------------------------------------------------------


@dataclass
class DatasetChange:
    name: str
    a: str | None
    b: str | None
    same: bool
    summary: dict[str, Any] | None = None  # `mlops data diff`'s counts, when both snapshots could be read
    problem: str | None = None


@dataclass
class CodeChange:
    commit_a: str
    commit_b: str
    dirty_a: str
    dirty_b: str
    files: list[tuple[str, str]] | None  # (status, path) between the commits; None when they cannot be compared
    problem: str | None = None
    uncommitted_a: list[str] = field(default_factory=list)  # files in run A's recorded diff
    uncommitted_b: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return self.commit_a != self.commit_b or bool(self.uncommitted_a or self.uncommitted_b)


@dataclass
class Change:
    name: str
    a: Any
    b: Any
    step: str | None = None
    delta: float | None = None


@dataclass
class RunDiff:
    a: RunReport
    b: RunReport
    metric: str  # the gate metric, headlined
    data: list[DatasetChange]
    code: CodeChange
    params: list[Change]
    metrics: list[Change]
    packages: list[Change] | None  # None: one of the runs recorded no packages
    environment: list[Change]

    def to_json(self) -> dict[str, Any]:
        return {
            "a": self.a.run_id,
            "b": self.b.run_id,
            "metric": self.metric,
            "data": [asdict(d) for d in self.data],
            "code": asdict(self.code) | {"changed": self.code.changed},
            "params": [asdict(c) for c in self.params],
            "metrics": [asdict(c) for c in self.metrics],
            "packages": None if self.packages is None else [asdict(c) for c in self.packages],
            "environment": [asdict(c) for c in self.environment],
        }


@scoped
def compare(config: Config, env: Environment, name_a: str, name_b: str) -> RunDiff:
    """What differs from run A to run B: data, code, params, metrics, packages, environment."""
    from mlops_template.data.snapshots import SnapshotStore
    from mlops_template.storage import open_storage

    with store_errors(env):
        reader, experiment_id = open_reader(config, env)
        named = [resolve_run(reader, config, experiment_id, n) for n in (name_a, name_b)]
        loaded = [load_run(reader, n.pipeline.info.experiment_id, n) for n in named]
    with store_errors(env, registry=True):
        a, b = (_report(reader, config, env, x) for x in loaded)
    store = SnapshotStore(open_storage(env))
    with store_errors(env):
        env_a, env_b = (reader.artifact(x.named.pipeline.info.run_id, ENVIRONMENT_ARTIFACT) for x in loaded)
        diff_a, diff_b = (reader.artifact(x.named.pipeline.info.run_id, DIFF_ARTIFACT) for x in loaded)
    return RunDiff(
        a=a,
        b=b,
        metric=config.model.gate.metric,
        data=_data_changes(store, a, b),
        code=_code_change(config.root, a, b, diff_a, diff_b),
        params=_param_changes(a, b),
        metrics=_metric_changes(a, b),
        packages=_package_changes(env_a, env_b),
        environment=_environment_changes(a, b),
    )


def _data_changes(store: SnapshotStore, a: RunReport, b: RunReport) -> list[DatasetChange]:
    from mlops_template.data.diff import diff_snapshots

    used_a, used_b = a.datasets(), b.datasets()
    changes = []
    for name in [n for n in _data_order(a, b) if n in used_a and n in used_b]:
        id_a, id_b = used_a[name], used_b[name]
        if id_a == id_b:
            changes.append(DatasetChange(name, id_a, id_b, same=True))
            continue
        try:
            summary = _summary(diff_snapshots(store, f"{name}:{id_a}", f"{name}:{id_b}", limit=0))
        except MlopsError as exc:
            changes.append(DatasetChange(name, id_a, id_b, same=False, problem=str(exc)))
            continue
        changes.append(DatasetChange(name, id_a, id_b, same=False, summary=summary))
    return changes


def _data_order(a: RunReport, b: RunReport) -> list[str]:
    """Dataset names in the order the pipeline first touches them (raw data before what is derived from it)."""
    seen: list[str] = []
    for report in (a, b):
        for step in report.steps:
            for ref in (*step.reads, *step.writes):
                if ref.name not in seen:
                    seen.append(ref.name)
    return seen


def _summary(d: DataDiff) -> dict[str, Any]:
    return {
        "rows_a": d.rows_a,
        "rows_b": d.rows_b,
        "only_in_a": d.only_in_a,
        "only_in_b": d.only_in_b,
        "columns_added": [name for name, _ in d.added],
        "columns_removed": [name for name, _ in d.removed],
        "columns_retyped": [name for name, _, _ in d.retyped],
        "drifted": d.drifted,
    }


def _code_change(root: Path, a: RunReport, b: RunReport, diff_a: bytes | None, diff_b: bytes | None) -> CodeChange:
    commit_a, commit_b = a.code["commit"], b.code["commit"]
    files, problem = changed_files(root, commit_a, commit_b)
    return CodeChange(
        commit_a,
        commit_b,
        a.code["dirty"],
        b.code["dirty"],
        files,
        problem,
        uncommitted_a=diff_files(diff_a),
        uncommitted_b=diff_files(diff_b),
    )


def changed_files(root: Path, commit_a: str, commit_b: str) -> tuple[list[tuple[str, str]] | None, str | None]:
    """Files that differ between two commits of the repository holding `root`, or why they cannot be listed."""
    if "none" in (commit_a, commit_b):
        return None, "a run was made outside a git repository"
    if commit_a == commit_b:
        return [], None
    try:
        return vcs.changed_files(root, commit_a, commit_b), None
    except VcsError as exc:
        reason = exc.reason or str(exc)
        return None, f"the repository at {root} cannot compare {commit_a[:12]} and {commit_b[:12]} ({reason})"


def diff_files(diff: bytes | None) -> list[str]:
    """The files a recorded `git diff` changes."""
    if not diff:
        return []
    found = []
    for line in diff.decode("utf-8", "replace").splitlines():
        if line.startswith("diff --git a/"):
            found.append(line.split(" b/", 1)[-1])
    return found


def _param_changes(a: RunReport, b: RunReport) -> list[Change]:
    changes = []
    for step in _steps_of_both(a, b):
        pa, pb = _of(a, step, "params"), _of(b, step, "params")
        for key in sorted(pa.keys() | pb.keys()):
            if pa.get(key) != pb.get(key):
                changes.append(Change(key, pa.get(key), pb.get(key), step=step))
    return changes


def _metric_changes(a: RunReport, b: RunReport) -> list[Change]:
    changes = []
    for step in _steps_of_both(a, b):
        ma, mb = _of(a, step, "metrics"), _of(b, step, "metrics")
        for key in sorted(ma.keys() | mb.keys()):
            va, vb = ma.get(key), mb.get(key)
            delta = vb - va if va is not None and vb is not None else None
            changes.append(Change(key, va, vb, step=step, delta=delta))
    return changes


def _steps_of_both(a: RunReport, b: RunReport) -> list[str]:
    names = [s.name for s in a.steps]
    return names + [s.name for s in b.steps if s.name not in names]


def _of(report: RunReport, step: str, what: str) -> dict[str, Any]:
    found = report.step(step)
    return getattr(found, what) if found else {}


def _package_changes(env_a: bytes | None, env_b: bytes | None) -> list[Change] | None:
    if env_a is None or env_b is None:
        return None
    pa, pb = json.loads(env_a).get("packages", {}), json.loads(env_b).get("packages", {})
    return [Change(n, pa.get(n), pb.get(n)) for n in sorted(pa.keys() | pb.keys()) if pa.get(n) != pb.get(n)]


def _environment_changes(a: RunReport, b: RunReport) -> list[Change]:
    pairs = [
        ("environment", a.environment, b.environment),
        ("python", a.code["python"], b.code["python"]),
        ("platform", a.code["platform"], b.code["platform"]),
        ("packages", a.code["packages"], b.code["packages"]),
    ]
    return [Change(name, va, vb) for name, va, vb in pairs if va != vb]
