"""What differs between two pipeline runs: the question `mlops diff` answers.

`compare` joins two runs' reports: data first (a `mlops data diff` summary
per dataset both used), then code, params, metrics, packages and environment,
the likely causes of a metric change before the rest.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlops_template import vcs
from mlops_template.config.environ import scoped
from mlops_template.config.load import Config, Environment
from mlops_template.errors import MlopsError, VcsError
from mlops_template.lineage.names import resolve_run
from mlops_template.lineage.show import RunReport, load_run, run_report
from mlops_template.pipeline.provenance import DIFF_ARTIFACT, ENVIRONMENT_ARTIFACT
from mlops_template.tracking.failures import store_errors
from mlops_template.tracking.reader import open_reader

if TYPE_CHECKING:
    from mlops_template.data.diff import DataDiff
    from mlops_template.data.snapshots import SnapshotStore


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
        a, b = (run_report(reader, config, env, x) for x in loaded)
    store = SnapshotStore(open_storage(env))
    with store_errors(env):
        env_a, env_b = (reader.artifact(x.named.pipeline.info.run_id, ENVIRONMENT_ARTIFACT) for x in loaded)
        diff_a, diff_b = (reader.artifact(x.named.pipeline.info.run_id, DIFF_ARTIFACT) for x in loaded)
    return RunDiff(
        a=a,
        b=b,
        metric=config.model_in(env.name).gate.metric,
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
    pairs = [
        (name, name, used_a[name], used_b[name]) for name in _data_order(a, b) if name in used_a and name in used_b
    ]
    # What a step read besides the run's own snapshot of that name (predict's input: the champion's held-out rows).
    other_a, other_b = a.other_reads(), b.other_reads()
    for step, name in sorted(other_a.keys() | other_b.keys()):
        id_a, id_b = other_a.get((step, name), used_a.get(name)), other_b.get((step, name), used_b.get(name))
        if id_a and id_b:
            pairs.append((f"{name} read by {step}", name, id_a, id_b))
    changes = []
    for label, name, id_a, id_b in pairs:
        if id_a == id_b:
            changes.append(DatasetChange(label, id_a, id_b, same=True))
            continue
        try:
            summary = _summary(diff_snapshots(store, f"{name}:{id_a}", f"{name}:{id_b}", limit=0))
        except MlopsError as exc:
            changes.append(DatasetChange(label, id_a, id_b, same=False, problem=str(exc)))
            continue
        changes.append(DatasetChange(label, id_a, id_b, same=False, summary=summary))
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
