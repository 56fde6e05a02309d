"""A rendered project's whole pipeline through the CLI, checked in the real MLflow store it wrote."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner
from conftest import copy_project, project_client, text_values_naming
from mlflow import MlflowClient

from mlops_template import load_config, read_predictions
from mlops_template.cli.main import main
from mlops_template.data.hashing import content_id
from mlops_template.models.model_files import sha256 as directory_sha256
from mlops_template.scaffold.new import new_project


def run_cli(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def set_gate(project: Path, text: str) -> None:
    toml = project / "mlops.toml"
    lines = [text if line.startswith("gate = ") else line for line in toml.read_text().splitlines()]
    toml.write_text("\n".join(lines) + "\n")


def pipeline_runs(client: MlflowClient, name: str):
    experiment = client.get_experiment_by_name(name)
    runs = client.search_runs([experiment.experiment_id], order_by=["attributes.start_time ASC"])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = {
        p.info.run_id: [r for r in runs if r.data.tags.get("mlflow.parentRunId") == p.info.run_id] for p in parents
    }
    return parents, children


def latest_step_run(client: MlflowClient, name: str, step: str):
    experiment = client.get_experiment_by_name(name)
    filter_string = f"tags.`mlops.step` = '{step}'"
    return client.search_runs([experiment.experiment_id], filter_string, order_by=["attributes.start_time DESC"])[0]


def test_full_run_is_one_parent_with_a_child_per_step(trained_project):
    project, output = trained_project.root, trained_project.output
    client = project_client(project)
    parents, children = pipeline_runs(client, "iris-e2e")
    assert len(parents) == 1
    parent = parents[0]
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=project, capture_output=True, text=True).stdout.strip()
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["mlops.pipeline"] == "iris-e2e"
    assert parent.data.tags["mlops.environment"] == "local"
    assert parent.data.tags["mlops.steps"] == "make_data,feat_data,train_model,predict"
    assert parent.data.tags["mlops.git_commit"] == head
    assert parent.data.tags["mlops.git_dirty"] == "false"  # run output is git-ignored
    steps = [c.data.tags["mlops.step"] for c in children[parent.info.run_id]]
    assert steps == ["make_data", "feat_data", "train_model", "predict"]
    assert parent.info.run_id in output
    assert "iris_e2e.make_data: 149 rows kept, 1 duplicate or unlabelled dropped" in output  # ctx.log is shown


def test_training_run_has_params_metrics_figure_and_training_data(trained_project):
    project = trained_project.root
    client = project_client(project)
    parents, children = pipeline_runs(client, "iris-e2e")
    train = next(c for c in children[parents[0].info.run_id] if c.data.tags["mlops.step"] == "train_model")
    assert train.data.params == {
        "target": "species",
        "max_depth": "5",
        "max_iter": "100",
        "max_train_rows": "1000000",
        "test_size": "0.3",
        "seed": "42",
    }
    assert {"accuracy", "f1", "precision", "recall"} <= set(train.data.metrics)
    assert 0.8 <= train.data.metrics["f1"] <= 1.0
    assert "evaluation.png" in [a.path for a in client.list_artifacts(train.info.run_id)]
    assert train.data.tags["mlops.gate"] == "passed"

    training = [
        i
        for i in train.inputs.dataset_inputs
        if {t.key: t.value for t in i.tags}.get("mlflow.data.context") == "training"
    ]
    assert [i.dataset.name for i in training] == ["train"]
    stored = (project / "data" / "datasets" / "train.parquet").read_bytes()
    assert training[0].dataset.digest == content_id(stored)
    snapshot = project / "data" / "snapshots" / "train" / f"{content_id(stored)}.parquet"
    assert str(snapshot) in training[0].dataset.source
    assert train.data.tags["mlops.training_data"] == f"train:{content_id(stored)}"


def test_passing_model_is_registered_as_champion_and_exported(trained_project):
    project = trained_project.root
    client = project_client(project)
    version = client.get_model_version_by_alias("iris-e2e", "champion")
    assert str(version.version) == "1"

    def current(name: str) -> str:
        return content_id((project / "data" / "datasets" / f"{name}.parquet").read_bytes())

    assert version.tags["mlops.data.featurized"] == current("featurized")
    assert version.tags["mlops.training_data"] == f"train:{current('train')}"
    assert version.tags["mlops.heldout_data"] == f"heldout:{current('heldout')}"
    exported = project / "data" / "models" / "iris-e2e" / "v1"
    assert (exported / "MLmodel").is_file()
    assert version.tags["mlops.model_sha256"] == directory_sha256(exported)


def test_predictions_cover_the_held_out_rows_with_the_model_version(trained_project):
    project = trained_project.root
    parents, _ = pipeline_runs(project_client(project), "iris-e2e")
    predictions = pd.read_parquet(project / "data" / "predictions" / f"{parents[0].info.run_id}.parquet")
    version = project_client(project).get_model_version_by_alias("iris-e2e", "champion")
    snapshots = project / "data" / "snapshots"
    held_out = pd.read_parquet(snapshots / "heldout" / f"{version.tags['mlops.heldout_data'].split(':')[1]}.parquet")
    trained_on = pd.read_parquet(snapshots / "train" / f"{version.tags['mlops.training_data'].split(':')[1]}.parquet")
    assert len(predictions) == len(held_out) == 45
    assert set(predictions["model_version"]) == {1}
    assert predictions[held_out.columns].equals(held_out)  # exactly the champion's held-out rows
    assert predictions.merge(trained_on, on=list(trained_on.columns)).empty  # none of them trained on


def test_failing_gate_registers_nothing_and_tags_why(trained_copy):
    project = trained_copy
    set_gate(project, 'gate = { metric = "f1", min = 1.01, beat_champion = true }')
    result = run_cli("run", "--project", str(project), "--step", "train_model")
    assert result.exit_code == 0, result.output
    assert "gate failed" in result.output and "nothing registered" in result.output
    client = project_client(project)
    assert [str(v.version) for v in client.search_model_versions("name='iris-e2e'")] == ["1"]
    latest = latest_step_run(client, "iris-e2e", "train_model")
    assert latest.data.tags["mlops.gate"] == "failed"
    assert "does not reach ≥ 1.01" in latest.data.tags["mlops.gate_reason"]


def test_equal_model_does_not_beat_the_champion(trained_copy):
    project = trained_copy
    result = run_cli("run", "--project", str(project), "--step", "train_model", "--no-cache")  # trained again
    assert result.exit_code == 0, result.output
    assert "does not beat champion v1" in result.output
    assert len(project_client(project).search_model_versions("name='iris-e2e'")) == 1
    # Loading the champion to score it draws none of MLflow's download bars into the output.
    assert "Downloading artifacts" not in result.output


def test_param_override_is_logged_on_the_step_run(trained_copy):
    project = trained_copy
    result = run_cli("run", "--project", str(project), "--step", "train_model", "-P", "max_depth=2")
    assert result.exit_code == 0, result.output
    client = project_client(project)
    latest = latest_step_run(client, "iris-e2e", "train_model")
    assert latest.data.params["max_depth"] == "2"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--step", "trian_model"], "unknown step 'trian_model'; did you mean 'train_model'?"),
        (["--environment", "staging"], "unknown environment 'staging'"),
        (["-P", "max_dpth=3"], "param 'max_dpth' is not a param of any step being run; did you mean 'max_depth'?"),
    ],
)
def test_bad_arguments_fail_before_any_run(trained_copy, args, message):
    project = trained_copy
    before = len(pipeline_runs(project_client(project), "iris-e2e")[0])
    result = CliRunner().invoke(main, ["run", "--project", str(project), *args])
    assert result.exit_code == 1
    assert message in result.output
    assert "Traceback" not in result.output
    assert len(pipeline_runs(project_client(project), "iris-e2e")[0]) == before


def test_bad_config_names_the_file_and_key(tmp_path):
    project = new_project("bad-config", directory=tmp_path / "bad-config", lock=False)
    toml = project / "mlops.toml"
    toml.write_text(toml.read_text().replace("[params]", "[parms]"))
    result = CliRunner().invoke(main, ["run", "--project", str(project)])
    assert result.exit_code == 1
    assert f"{toml}: unknown key 'parms'" in result.output
    assert "did you mean 'params'?" in result.output
    assert not (project / "mlruns.db").exists()


def test_predict_without_champion_says_to_train_first(tmp_path):
    project = new_project("no-champion", directory=tmp_path / "no-champion", lock=False)
    result = CliRunner().invoke(main, ["run", "--project", str(project), "--step", "predict"])
    assert result.exit_code == 1
    assert "step 'predict' failed: model 'no-champion' has no 'champion' version yet; train one first" in result.output
    parents, children = pipeline_runs(project_client(project), "no-champion")
    assert parents[0].info.status == "FAILED"
    assert [c.info.status for c in children[parents[0].info.run_id]] == ["FAILED"]


def test_failing_step_stops_the_pipeline_and_points_at_its_log(tmp_path):
    project = new_project("fails", directory=tmp_path / "fails", lock=False)
    result = CliRunner().invoke(main, ["run", "--project", str(project), "-P", "target=label"])
    assert result.exit_code == 1
    assert (
        "step 'make_data' failed: target column 'label' is not in the raw data (columns: sepal_length," in result.output
    )
    log = Path(result.output.split("full log: ")[1].split(")")[0].replace("\n", ""))
    assert "Traceback" in log.read_text() and "Traceback" not in result.output
    client = project_client(project)
    parents, children = pipeline_runs(client, "fails")
    assert parents[0].info.status == "FAILED"
    assert [c.data.tags["mlops.step"] for c in children[parents[0].info.run_id]] == ["make_data"]
    assert client.search_registered_models() == []


def run_in(project: Path, command: list[str], *, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, cwd=project, env=env, capture_output=True, text=True, timeout=300)


def _project_env(project: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env["MLFLOW_DISABLE_TELEMETRY"] = "true"
    env["PYTHONPATH"] = str(project / "src")
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"  # as in an activated venv
    return env


def test_python_module_entry_point_runs_one_step(trained_copy):
    project = trained_copy
    result = run_in(
        project,
        [sys.executable, "-m", "iris_e2e.main", "--step", "make_data", "--environment", "local"],
        env=_project_env(project),
    )
    assert result.returncode == 0, result.stderr
    parents, children = pipeline_runs(project_client(project), "iris-e2e")
    assert parents[-1].data.tags["mlops.steps"] == "make_data"
    assert [c.data.tags["mlops.step"] for c in children[parents[-1].info.run_id]] == ["make_data"]


def test_python_module_entry_point_reports_errors_in_one_line(trained_copy):
    project = trained_copy
    result = run_in(project, [sys.executable, "-m", "iris_e2e.main", "--step", "nope"], env=_project_env(project))
    assert result.returncode == 1
    assert "unknown step 'nope'" in result.stderr and "Traceback" not in result.stderr


def test_mlproject_lists_main_and_every_step(trained_project):
    project = trained_project.root
    import yaml

    spec = yaml.safe_load((project / "MLproject").read_text())
    assert set(spec["entry_points"]) == {"main", "make_data", "feat_data", "train_model", "predict"}


def test_rendered_project_tests_pass(tmp_path):
    project = new_project("own-tests", directory=tmp_path / "own-tests", lock=False)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "MLOPS_", "PYTEST_"))}
    env["MLFLOW_DISABLE_TELEMETRY"] = "true"
    result = run_in(project, [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"], env=env)
    assert result.returncode == 0, result.stdout[-3000:]
    assert "7 passed" in result.stdout
    # The project's tests ran in their own storage: the project folder gained no run output.
    assert not (project / "mlruns.db").exists() and not (project / "data" / "datasets").exists()


def test_rendered_project_tests_pass_on_the_teams_own_table_and_target(tmp_path):
    """As its README says: a table in data/raw/, the target in mlops.toml, committed; its own pytest stays green."""
    from test_own_data import churn_table

    project = new_project("own-table", directory=tmp_path / "own-table", lock=False)
    churn_table(3000).to_csv(project / "data" / "raw" / "customers.csv", index=False)  # more than the sample
    toml = project / "mlops.toml"
    text, found = re.subn(r'(?m)^target = "species"', 'target = "churned"', toml.read_text())
    assert found == 1
    toml.write_text(text)
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@localhost"]
    subprocess.run([*git, "commit", "-qam", "our target"], cwd=project, check=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "MLOPS_", "PYTEST_"))}
    env["MLFLOW_DISABLE_TELEMETRY"] = "true"
    result = run_in(project, [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"], env=env)
    assert result.returncode == 0, result.stdout[-3000:]
    assert "7 passed" in result.stdout


def test_show_points_each_run_at_its_own_predictions_when_another_wrote_the_same_bytes(trained_copy):
    import json

    project = trained_copy
    for _ in range(2):  # the same champion on the same held-out rows: byte-identical predictions
        assert run_cli("run", "--project", str(project), "--step", "predict", "--no-cache").exit_code == 0
    parents, _ = pipeline_runs(project_client(project), "iris-e2e")
    written = []
    for parent in parents[-2:]:
        shown = json.loads(run_cli("show", parent.info.run_id, "--json", "--project", str(project)).output)
        [step] = [s for s in shown["steps"] if s["name"] == "predict"]
        [predictions] = [w for w in step["writes"] if w["name"] == "predictions"]
        written.append((predictions["id"], predictions["uri"], parent.info.run_id))
    (id_a, source_a, run_a), (id_b, source_b, run_b) = written
    assert id_a == id_b and source_a != source_b
    assert source_a.endswith(f"{run_a}.parquet") and source_b.endswith(f"{run_b}.parquet")


def test_runs_lists_pipeline_runs_newest_first_with_gate_and_version(trained_copy):
    project = trained_copy
    assert run_cli("run", "--project", str(project), "--step", "make_data").exit_code == 0
    parents, _ = pipeline_runs(project_client(project), "iris-e2e")
    result = run_cli("runs", "--project", str(project), "-n", "50")
    assert result.exit_code == 0, result.output
    lines = [line for line in result.output.splitlines() if line.strip() and not line.strip().startswith("run ")]
    ids = [line.split()[0] for line in lines]
    assert len(parents) == 2 and ids == [parents[1].info.run_id, parents[0].info.run_id]
    rows = dict(zip(ids, lines, strict=True))
    first, second = rows[parents[0].info.run_id], rows[parents[1].info.run_id]
    assert {"passed", "v1", "make_data,feat_data,train_model,predict"} <= set(first.split())
    assert "make_data" in second.split() and not {"passed", "failed", "v1"} & set(second.split())


def test_models_and_promote_move_the_champion(trained_copy):
    project = trained_copy
    set_gate(project, 'gate = { metric = "f1", min = 0.5, beat_champion = false }')
    result = run_cli("run", "--project", str(project), "--step", "train_model", "-P", "max_depth=1")
    assert result.exit_code == 0, result.output
    client = project_client(project)
    assert str(client.get_model_version_by_alias("iris-e2e", "champion").version) == "2"

    listing = run_cli("models", "--project", str(project)).output
    rows = {line.split()[0]: line for line in listing.splitlines() if re.match(r"\s*v\d+\s", line)}
    assert set(rows) == {"v1", "v2"}
    assert "champion" in rows["v2"] and "champion" not in rows["v1"]

    result = run_cli("promote", "v1", "--project", str(project))
    assert result.exit_code == 0 and "'champion' now points at v1" in result.output
    assert str(client.get_model_version_by_alias("iris-e2e", "champion").version) == "1"

    missing = CliRunner().invoke(main, ["promote", "7", "--project", str(project)])
    assert missing.exit_code == 1
    assert "model 'iris-e2e' has no version '7'; valid: 1, 2" in missing.output


def test_unreachable_tracking_server_fails_fast_with_one_line(tmp_path):
    import socket

    with socket.socket() as s:  # a port nothing listens on once closed
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    project = new_project("offline", directory=tmp_path / "offline", lock=False)
    with open(project / "mlops.toml", "a") as toml:
        toml.write(f'\n[environments.remote]\nstorage = "data"\ntracking_uri = "http://127.0.0.1:{port}"\n')
    result = CliRunner().invoke(main, ["run", "--project", str(project), "--environment", "remote"])
    assert result.exit_code == 1
    assert f"environment 'remote': tracking server http://127.0.0.1:{port} is unreachable" in result.output
    assert "Traceback" not in result.output
    assert not (project / "data" / "datasets").exists()


# -- copies of the trained project ---------------------------------------------------------------


def test_a_copy_of_the_trained_project_runs_with_the_original_gone(trained_project, tmp_path):
    original = trained_project.root
    copy = copy_project(original, tmp_path / "copy")
    assert text_values_naming(copy / "mlruns.db", str(original)) == []
    assert [row for row in text_values_naming(copy / "mlruns.db", str(copy)) if row[:2] == ("runs", "artifact_uri")]
    # Files are copied byte for byte (a model's files are hashed at registration); the only mention of the
    # original left is MLflow's note of where each model was first logged, which nothing reads back.
    mentions = {
        line
        for p in copy.rglob("*")
        if p.is_file() and p.name != "mlruns.db" and ".git" not in p.parts and str(original).encode() in p.read_bytes()
        for line in p.read_text(errors="replace").splitlines()
        if str(original) in line
    }
    assert all(line.startswith(f"artifact_path: file://{original}/mlruns/models/") for line in mentions)

    away = original.with_name(original.name + "-away")
    original.rename(away)  # nothing the copy does may reach the original's files
    try:
        result = run_cli("run", "--project", str(copy), "--step", "predict", "--no-cache")  # loads, not reuses
        assert result.exit_code == 0, result.output
        assert "model iris-e2e v1" in result.output  # the champion, downloaded and checked against its sha256
        client = project_client(copy)
        train = latest_step_run(client, "iris-e2e", "train_model")
        assert "evaluation.png" in [a.path for a in client.list_artifacts(train.info.run_id)]
        figure = client.download_artifacts(train.info.run_id, "evaluation.png", str(tmp_path))
        assert Path(figure).read_bytes().startswith(b"\x89PNG")
        predict = latest_step_run(client, "iris-e2e", "predict")
        scored = read_predictions(load_config(copy), predict.data.tags["mlflow.parentRunId"])
        assert len(scored) == 45 and set(scored["model_version"]) == {1}
    finally:
        away.rename(original)
    assert not away.exists() and (original / "mlruns.db").is_file()


def test_train_and_predict_leave_no_model_folders_in_the_temporary_folder(trained_copy, tmp_path, monkeypatch):
    temp = tmp_path / "tmp"
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    made: list[Path] = []

    class Noted(tempfile.TemporaryDirectory):
        """A spy: the real TemporaryDirectory, each folder it makes noted, to show the run used `temp`."""

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            made.append(Path(self.name))

    monkeypatch.setattr(tempfile, "TemporaryDirectory", Noted)
    # No comparison with the champion: the new model passes, is downloaded to be hashed and registered.
    set_gate(trained_copy, 'gate = { metric = "f1", min = 0.8, beat_champion = false }')

    result = run_cli("run", "--project", str(trained_copy), "--step", "train_model", "--step", "predict")

    assert result.exit_code == 0, result.output
    assert "iris-e2e v2 is champion" in result.output and "model iris-e2e v2" in result.output
    ours = sorted(p.name.split("-")[1] for p in made if p.name.startswith(("mlops-champion-", "mlops-model-")))
    assert ours == ["champion", "model"]
    assert all(p.parent == temp for p in made)
    assert [p.name for p in temp.iterdir() if p.name.startswith(("mlops-champion-", "mlops-model-"))] == []
