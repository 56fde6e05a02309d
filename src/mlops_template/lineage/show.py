"""One pipeline run's lineage: the question `mlops show` answers.

`describe` gathers each step's status, duration, params and metrics, every
snapshot read and written, the code and packages, the gate's decision and the
model it registered. Comparing two runs is in :mod:`diff`, reproducing one in
:mod:`reproduce`.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from mlops_template.config.environ import scoped
from mlops_template.config.load import Config, Environment
from mlops_template.lineage.listing import TRAINING_STEP
from mlops_template.lineage.names import NamedRun, resolve_run
from mlops_template.pipeline.provenance import NOT_RECORDED
from mlops_template.tracking.connect import display_uri
from mlops_template.tracking.failures import store_errors
from mlops_template.tracking.reader import Where, open_reader
from mlops_template.tracking.tags import (
    TAG_CACHED_FROM,
    TAG_DATA_CONTEXT,
    TAG_ENVIRONMENT,
    TAG_GATE,
    TAG_GATE_REASON,
    TAG_GIT_COMMIT,
    TAG_GIT_DIFF,
    TAG_GIT_DIRTY,
    TAG_MODEL_VERSION,
    TAG_OUTPUT_PREFIX,
    TAG_OUTPUT_URI_PREFIX,
    TAG_PACKAGES,
    TAG_PARENT,
    TAG_PIPELINE_RUN,
    TAG_PLATFORM,
    TAG_PYTHON,
    TAG_REPRODUCES,
    TAG_SQL_PREFIX,
    TAG_STEP,
    TAG_STEPS,
)

if TYPE_CHECKING:
    from mlflow.entities import Run

    from mlops_template.tracking.reader import Reader

logger = logging.getLogger(__name__)

PREDICTIONS = "predictions"


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
    queries: dict[str, dict[str, Any]] = field(default_factory=dict)  # SQL sources by dataset: file, sha256, ...
    cached_from: str | None = None  # the earlier attempt this step reused instead of running (step caching)


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
        """Every snapshot the run used, by dataset name: the one a step wrote, else the first one read.

        A name written by one step and read by a later one is the same snapshot,
        except `heldout`: train_model writes its own held-out rows, predict reads
        the champion's (see :meth:`other_reads`).
        """
        found: dict[str, str] = {}
        for s in self.steps:
            for ref in s.reads:
                found.setdefault(ref.name, ref.id)
        for s in self.steps:
            for ref in s.writes:
                found[ref.name] = ref.id
        found.pop(PREDICTIONS, None)
        return found

    def other_reads(self) -> dict[tuple[str, str], str]:
        """The snapshots a step read that are not the run's own of that name, by (step, dataset name)."""
        own = self.datasets()
        return {(s.name, r.name): r.id for s in self.steps for r in s.reads if own.get(r.name) != r.id}

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
        return run_report(reader, config, env, loaded)


def run_report(reader: Reader, config: Config, env: Environment, loaded: _Loaded) -> RunReport:
    """The report of a loaded pipeline run: its steps in plan order, its code and the model it registered."""
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
        queries=_queries(tags),
        cached_from=tags.get(TAG_CACHED_FROM),
    )


def _queries(tags: dict[str, str]) -> dict[str, dict[str, Any]]:
    """The SQL queries a step ran, by the dataset their result became (tags `mlops.sql.<name>`)."""
    found = {}
    for key, value in sorted(tags.items()):
        if key.startswith(TAG_SQL_PREFIX):
            try:
                found[key.removeprefix(TAG_SQL_PREFIX)] = json.loads(value)
            except ValueError:
                continue
    return found


def dataset_refs(run: Run) -> tuple[list[DataRef], list[DataRef]]:
    """The snapshots a step run read, and those it wrote (tagged `mlops.output.<name>`, or predictions)."""
    reads: dict[str, DataRef] = {}
    writes: dict[str, DataRef] = {}
    for entry in run.inputs.dataset_inputs if run.inputs else []:
        dataset = entry.dataset
        context = {t.key: t.value for t in entry.tags}.get(TAG_DATA_CONTEXT, "input")
        written = run.data.tags.get(TAG_OUTPUT_PREFIX + dataset.name) == dataset.digest or context == "output"
        # Where this run wrote it: MLflow shows the first run's source for the same bytes.
        source = run.data.tags.get(TAG_OUTPUT_URI_PREFIX + dataset.name) if written else None
        ref = DataRef(dataset.name, dataset.digest, _rows(dataset.profile), source or _source(dataset.source), context)
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
    from mlops_template.models.registry import export_folder
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
        storage_uri=storage.uri(export_folder(name, str(version.version))),
        training_data=version.tags.get(TAG_TRAINING_DATA, ""),
    )
