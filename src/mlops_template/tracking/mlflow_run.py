"""Glue for `mlops run` started by `mlflow run`: MLflow's own run, its variables, and the tag leading to ours.

`mlflow run` creates a run and hands its entry point MLFLOW_RUN_ID,
MLFLOW_EXPERIMENT_ID and MLFLOW_TRACKING_URI; the pipeline keeps them out of
the way of its own runs and tags MLflow's run with the pipeline run it started.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from mlops_template.config.load import Config, Environment
from mlops_template.errors import TrackingError
from mlops_template.redact import redact_text, redacted_repr
from mlops_template.tracking.connect import client, local_store_path
from mlops_template.tracking.failures import one_line
from mlops_template.tracking.tags import TAG_ENVIRONMENT, TAG_NOTE, TAG_PIPELINE, TAG_PIPELINE_RUN_ID

# What `mlflow run` hands the entry point's process.
_PROJECT_RUN_VARIABLES = ("MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID", "MLFLOW_TRACKING_URI")


@redacted_repr
@dataclass(frozen=True)
class LaunchedRun:
    """The run `mlflow run` created for this process, and the tracking store MLflow keeps it in."""

    run_id: str
    tracking_uri: str | None


@contextmanager
def launched_run() -> Iterator[LaunchedRun | None]:
    """Under `mlflow run` (MLFLOW_RUN_ID set), MLflow's run, with MLflow's variables out of the way meanwhile.

    MLflow hands its run to an entry point as MLFLOW_RUN_ID, MLFLOW_EXPERIMENT_ID and
    MLFLOW_TRACKING_URI. Left in place, every nested run would resume MLflow's run, and
    the store MLflow falls back to when given none (`./mlflow.db`, or `./mlruns`) would
    read as the user's override of the environment's store. A URI the user gave
    (`MLFLOW_TRACKING_URI=… mlflow run …`) stays an override. Restored on exit.
    """
    run_id = os.environ.get("MLFLOW_RUN_ID")
    if not run_id:
        yield None
        return
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    keep = () if uri is None or _is_mlflow_fallback(uri) else ("MLFLOW_TRACKING_URI",)
    saved = {k: os.environ.pop(k) for k in _PROJECT_RUN_VARIABLES if k in os.environ and k not in keep}
    try:
        yield LaunchedRun(run_id, uri)
    finally:
        os.environ.update(saved)


def _is_mlflow_fallback(uri: str) -> bool:
    """Whether `uri` is the store MLflow uses in this folder when no tracking URI is set."""
    path = local_store_path(uri)
    here = Path.cwd()
    return path is not None and path in {(here / "mlflow.db").resolve(), (here / "mlruns").resolve()}


def joins_launched_run(launched: LaunchedRun, experiment_id: str) -> bool:
    """Whether MLflow's run is in the connected store and the project's experiment, so it can be the pipeline run."""
    from mlflow.exceptions import MlflowException

    try:
        return client().get_run(launched.run_id).info.experiment_id == experiment_id
    except MlflowException:  # not in this store
        return False


def point_launched_run(launched: LaunchedRun, pipeline_run_id: str, config: Config, env: Environment) -> None:
    """Tag MLflow's run, in its own store, with the pipeline run it started, so one leads to the other.

    Nothing to tag when MLFLOW_RUN_ID came without a store (set by hand, not by `mlflow run`).
    """
    import mlflow

    if launched.tracking_uri is None:
        return

    note = (
        f"`mlflow run` of {config.name}: its steps ran as pipeline run {pipeline_run_id}, tracked in environment "
        f"'{env.name}' (experiment '{config.name}'); `mlops runs` and `mlops ui` in the project folder show it."
    )
    tags = {TAG_PIPELINE_RUN_ID: pipeline_run_id, TAG_PIPELINE: config.name, TAG_ENVIRONMENT: env.name}
    try:
        outer = mlflow.MlflowClient(tracking_uri=launched.tracking_uri)
        for key, value in {**tags, TAG_NOTE: note}.items():
            outer.set_tag(launched.run_id, key, value)
    except Exception as exc:
        raise TrackingError(
            f"`mlflow run`'s run {launched.run_id} could not be tagged with pipeline run {pipeline_run_id} "
            f"({redact_text(one_line(exc))}); check the MLFLOW_TRACKING_URI `mlflow run` was given"
        ) from exc
