"""Under `mlflow run`, the pipeline run lands in the project's store and experiment, wherever MLflow keeps its own run.

`mlflow run` creates a run before starting an entry point and hands it over as
MLFLOW_RUN_ID / MLFLOW_EXPERIMENT_ID / MLFLOW_TRACKING_URI. The in-process tests
below create that run in a real SQLite store and set those variables as MLflow does;
the last test runs the documented command line itself.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from mlflow import MlflowClient

from mlops_template import Pipeline, StepContext, load_config
from mlops_template.pipeline.runner import run_pipeline
from mlops_template.scaffold.new import new_project
from mlops_template.tracking.tags import TAG_LAUNCHED_BY, TAG_NOTE, TAG_PIPELINE_RUN_ID


def make(ctx: StepContext) -> None:
    ctx.write("numbers", pd.DataFrame({"x": range(ctx.params["rows"])}))


PIPELINE = Pipeline([make])


@pytest.fixture(scope="module")
def mlflow_home(tmp_path_factory) -> Path:
    """A folder whose `mlflow.db` is where MLflow tracks when given no URI there (its tables made once)."""
    home = tmp_path_factory.mktemp("mlflow-home")
    MlflowClient(tracking_uri=f"sqlite:///{home / 'mlflow.db'}").search_experiments()
    return home


def launch(monkeypatch, tracking_uri: str, experiment_id: str = "0") -> str:
    """Create a run as `mlflow run` does and hand it to this process through the same variables."""
    run = MlflowClient(tracking_uri=tracking_uri).create_run(experiment_id)
    monkeypatch.setenv("MLFLOW_RUN_ID", run.info.run_id)
    monkeypatch.setenv("MLFLOW_EXPERIMENT_ID", experiment_id)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking_uri)
    return run.info.run_id


def pipeline_runs(tracking_uri: str, experiment: str):
    client = MlflowClient(tracking_uri=tracking_uri)
    found = client.get_experiment_by_name(experiment)
    runs = client.search_runs([found.experiment_id]) if found else []
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    return parents, children


def test_a_run_in_mlflows_fallback_store_points_at_the_pipeline_run_in_the_project_store(
    tiny_project, shared_db, mlflow_home, monkeypatch
):
    monkeypatch.chdir(mlflow_home)  # `mlflow run .` without a URI: MLflow's run is in ./mlflow.db
    fallback = f"sqlite:///{mlflow_home / 'mlflow.db'}"
    outer_id = launch(monkeypatch, fallback)
    config = load_config(tiny_project)

    result = run_pipeline(PIPELINE, config)

    assert result.ok and result.run_id != outer_id
    assert result.tracking_uri == shared_db  # the environment's store, not MLflow's fallback
    [parent], [child] = pipeline_runs(shared_db, config.name)
    assert parent.info.run_id == result.run_id and parent.info.status == "FINISHED"
    assert parent.data.tags[TAG_LAUNCHED_BY] == outer_id
    assert child.data.tags["mlops.step"] == "make" and child.data.tags["mlflow.parentRunId"] == result.run_id

    outer = MlflowClient(tracking_uri=fallback).get_run(outer_id)
    assert outer.data.tags[TAG_PIPELINE_RUN_ID] == result.run_id
    assert outer.data.tags["mlops.environment"] == "local"
    assert result.run_id in outer.data.tags[TAG_NOTE]
    assert pipeline_runs(fallback, config.name) == ([], [])  # nothing of the pipeline in MLflow's store
    # MLflow's variables are back for whatever runs after the pipeline in this process.
    assert os.environ["MLFLOW_RUN_ID"] == outer_id and os.environ["MLFLOW_TRACKING_URI"] == fallback


def test_a_run_in_the_projects_store_and_experiment_is_the_pipeline_run(tiny_project, shared_db, monkeypatch):
    config = load_config(tiny_project)
    experiment_id = MlflowClient(tracking_uri=shared_db).create_experiment(config.name)
    outer_id = launch(monkeypatch, shared_db, experiment_id)

    result = run_pipeline(PIPELINE, config)

    assert result.run_id == outer_id
    [parent], [child] = pipeline_runs(shared_db, config.name)
    assert parent.info.run_id == outer_id
    assert parent.data.tags["mlops.steps"] == "make" and TAG_LAUNCHED_BY not in parent.data.tags
    assert child.data.tags["mlflow.parentRunId"] == outer_id


def test_a_run_in_another_experiment_of_the_store_points_at_the_pipeline_run(tiny_project, shared_db, monkeypatch):
    config = load_config(tiny_project)
    outer_id = launch(monkeypatch, shared_db, "0")  # `mlflow run` without --experiment-name: Default

    result = run_pipeline(PIPELINE, config)

    [parent], _ = pipeline_runs(shared_db, config.name)
    assert parent.info.run_id == result.run_id != outer_id
    assert MlflowClient(tracking_uri=shared_db).get_run(outer_id).data.tags[TAG_PIPELINE_RUN_ID] == result.run_id


def test_a_tracking_uri_the_user_gave_stays_the_pipelines_store(
    tiny_project, shared_db, mlflow_home, tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)  # so mlflow_home's store is not MLflow's fallback but a URI the user chose
    chosen = f"sqlite:///{mlflow_home / 'mlflow.db'}"
    outer_id = launch(monkeypatch, chosen)
    config = load_config(tiny_project)

    result = run_pipeline(PIPELINE, config)

    assert result.tracking_uri == chosen
    [parent], _ = pipeline_runs(chosen, config.name)
    assert parent.info.run_id == result.run_id and parent.data.tags[TAG_LAUNCHED_BY] == outer_id
    assert pipeline_runs(shared_db, config.name) == ([], [])


def test_documented_mlflow_run_lands_in_the_projects_experiment_in_mlruns_db(tmp_path):
    """`mlflow run . -e make_data --env-manager local`, typed as the README shows it, in a rendered project."""
    project = new_project("mlflow-run", directory=tmp_path / "mlflow-run", lock=False)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "MLOPS_", "PYTEST_"))}
    env["MLFLOW_DISABLE_TELEMETRY"] = "true"
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"  # as in an activated venv
    done = subprocess.run(
        ["mlflow", "run", ".", "-e", "make_data", "--env-manager", "local"],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0 and "Traceback" not in output, output[-3000:]

    [parent], [child] = pipeline_runs(f"sqlite:///{project / 'mlruns.db'}", "mlflow-run")
    assert parent.info.status == "FINISHED" and parent.data.tags["mlops.steps"] == "make_data"
    assert child.data.tags["mlops.step"] == "make_data" and child.info.status == "FINISHED"
    outer = MlflowClient(tracking_uri=f"sqlite:///{project / 'mlflow.db'}").get_run(parent.data.tags[TAG_LAUNCHED_BY])
    assert outer.info.status == "FINISHED" and outer.data.tags[TAG_PIPELINE_RUN_ID] == parent.info.run_id
