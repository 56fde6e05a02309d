"""What a rendered project shows its team: the examples run as written, the notebook snippet reads through the
public API, and the code passes the project's own lint and format settings."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pandas as pd
import pytest
from conftest import project_client

from mlops_template import load_config, read_predictions
from mlops_template.data.hashing import content_id
from mlops_template.scaffold.new import new_project

BIN = Path(sys.executable).parent  # the test venv's scripts: mlops, mlflow, ruff, python


def project_env(project: Path) -> dict[str, str]:
    """The environment of a shell in the project folder with the venv activated, and no test's overrides."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "MLOPS_", "PYTEST_"))}
    env["MLFLOW_DISABLE_TELEMETRY"] = "true"
    env["PATH"] = f"{BIN}{os.pathsep}{env['PATH']}"
    env["PYTHONPATH"] = str(project / "src")
    return env


def run_in(project: Path, *command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, cwd=project, env=project_env(project), capture_output=True, text=True, timeout=600)


def pipeline_runs(project: Path, experiment: str) -> list:
    """Parent runs, oldest first, each with its child runs' step names."""
    client = project_client(project)
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id], order_by=["attributes.start_time ASC"])
    return [
        (
            parent,
            [r.data.tags["mlops.step"] for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id],
        )
        for parent in runs
        if "mlflow.parentRunId" not in parent.data.tags
    ]


# -- examples/ -------------------------------------------------------------------------------------


def test_run_pipeline_py_trains_predicts_and_reads_both_back(trained_copy):
    project = trained_copy
    result = run_in(project, str(BIN / "python"), "examples/run_pipeline.py")
    assert result.returncode == 0, result.stderr[-3000:]

    lines = result.stdout.splitlines()
    run_id = re.fullmatch(r"pipeline run (\w+) on local: train_model, predict", lines[0]).group(1)
    [parent] = [p for p, _ in pipeline_runs(project, "iris-e2e") if p.info.run_id == run_id]
    assert parent.data.tags["mlops.steps"] == "train_model,predict" and parent.info.status == "FINISHED"
    featurized = project / "data" / "datasets" / "featurized.parquet"
    assert lines[1] == f"featurized:{content_id(featurized.read_bytes())}: 149 rows, 8 columns"
    stored = read_predictions(load_config(project), run_id)  # its own file, or the one a reused predict made
    champion = project_client(project).get_model_version_by_alias("iris-e2e", "champion")
    assert lines[2] == f"{len(stored)} predictions by model v{champion.version}"
    header = lines[3].split()  # the head of the table: first and last columns (pandas elides the middle)
    assert (header[0], header[-1]) == (stored.columns[0], "model_version")
    assert [line.split()[0] for line in lines[4:9]] == ["0", "1", "2", "3", "4"]  # its first five rows
    assert lines[4].split()[-2:] == [str(stored["prediction"][0]), str(champion.version)]


def test_run_pipeline_sh_runs_every_line_in_a_new_project(tmp_path):
    project = new_project("shell-demo", directory=tmp_path / "shell-demo", lock=False)
    result = run_in(project, "bash", "examples/run_pipeline.sh")
    assert result.returncode == 0, (result.stdout[-2000:], result.stderr[-3000:])

    runs = pipeline_runs(project, "shell-demo")
    assert [(p.data.tags["mlops.steps"], steps) for p, steps in runs] == [
        ("make_data,feat_data,train_model,predict", ["make_data", "feat_data", "train_model", "predict"]),
        ("train_model", ["train_model"]),
        ("predict", ["predict"]),
        ("make_data", ["make_data"]),  # python -m shell_demo.main
        ("train_model", ["train_model"]),  # mlflow run: MLflow's run is the pipeline run
    ]
    assert all(p.info.status == "FINISHED" for p, _ in runs)
    assert runs[-1][0].data.tags["mlflow.project.entryPoint"] == "train_model"
    assert [p.data.tags["mlops.git_dirty"] for p, _ in runs] == ["false"] * 5  # run output stays out of git
    assert not (project / "mlflow.db").exists() and not (project / "mlruns" / "0").exists()
    assert re.search(r"^\s*v1\s.*champion", result.stdout, re.MULTILINE)  # `mlops models`
    assert runs[0][0].info.run_id in result.stdout  # `mlops runs`


# -- notebooks/README.md ----------------------------------------------------------------------------


def test_notebook_snippet_reads_the_verified_data_and_a_runs_predictions(trained_project, monkeypatch):
    project = trained_project.root
    text = (project / "notebooks" / "README.md").read_text()
    [code] = re.findall(r"```python\n(.*?)```", text, re.DOTALL)
    [(parent, _)] = pipeline_runs(project, "iris-e2e")
    assert "<pipeline-run-id>" in code
    monkeypatch.chdir(project)  # a notebook runs in the project, where load_config() finds mlops.toml
    for var in ("MLOPS_ENVIRONMENT", "MLOPS_STORAGE"):
        monkeypatch.delenv(var, raising=False)
    namespace: dict = {}
    exec(compile(code.replace("<pipeline-run-id>", parent.info.run_id), "notebooks/README.md", "exec"), namespace)

    featurized = project / "data" / "datasets" / "featurized.parquet"
    assert namespace["snapshot"].ref == f"featurized:{content_id(featurized.read_bytes())}"
    pd.testing.assert_frame_equal(namespace["df"], pd.read_parquet(featurized))
    stored = pd.read_parquet(project / "data" / "predictions" / f"{parent.info.run_id}.parquet")
    pd.testing.assert_frame_equal(namespace["predictions"], stored)


# -- lint -------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def rendered(tmp_path_factory) -> Path:
    return new_project("lint-me", directory=tmp_path_factory.mktemp("lint") / "lint-me", package="lint_me", lock=False)


def test_rendered_project_configures_ruff_like_the_library(rendered):
    ruff = tomllib.loads((rendered / "pyproject.toml").read_text())["tool"]["ruff"]
    assert (ruff["line-length"], ruff["target-version"]) == (120, "py311")
    assert ruff["lint"]["select"] == ["E", "F", "W", "I", "B", "UP"]
    assert ruff["lint"]["isort"]["known-first-party"] == ["lint_me"]


def test_rendered_project_passes_ruff_check_and_format(rendered):
    python_files = sorted(str(p) for p in rendered.rglob("*.py"))
    seen = run_in(rendered, str(BIN / "ruff"), "check", "--show-files", ".")
    assert sorted(line for line in seen.stdout.splitlines() if line.endswith(".py")) == python_files  # none excluded

    check = run_in(rendered, str(BIN / "ruff"), "check", "--output-format=json", "--no-cache", ".")
    assert (check.returncode, json.loads(check.stdout)) == (0, []), check.stderr

    fmt = run_in(rendered, str(BIN / "ruff"), "format", "--check", "--no-cache", ".")
    assert fmt.returncode == 0, fmt.stdout
    checked = re.fullmatch(r"(\d+) files already formatted", fmt.stdout.strip())
    assert checked and int(checked.group(1)) >= len(python_files)  # newer ruff also formats code in Markdown
