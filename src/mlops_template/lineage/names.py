"""Naming a pipeline run: what `mlops show`, `diff` and `reproduce` accept.

A run is named by its id, a unique prefix of at least 6 characters, `latest`
(the newest pipeline run) or `champion` (the pipeline run whose training made
the champion). A step run's name leads to its pipeline run.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from mlops_template.config.load import Config
from mlops_template.errors import RunError
from mlops_template.models.registry import CHAMPION
from mlops_template.tracking.reader import Where
from mlops_template.tracking.tags import TAG_PARENT, TAG_STEP, TAG_STEPS

if TYPE_CHECKING:
    from mlflow.entities import Run

    from mlops_template.tracking.reader import Reader

MIN_PREFIX = 6


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
