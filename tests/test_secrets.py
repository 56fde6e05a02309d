"""Secrets never leave the environment: not in params, tags, artifacts, logs, output, stored data, or `ps`.

A rendered project tracks straight into PostgreSQL with a password in its
tracking URI and keeps its data on S3 (moto) with distinctive AWS keys. The
whole pipeline, `runs`, `models` and `ui` run as their own processes; then
everything they left is searched for the secrets.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import boto3
import pytest
from conftest import make_bucket
from mlflow import MlflowClient
from stack import Postgres, client_env, free_port

from mlops_template.scaffold.new import new_project

ACCESS_KEY = f"AKIA{uuid.uuid4().hex[:16].upper()}"
SECRET_KEY = f"aws-secret-{uuid.uuid4().hex}"
PASSWORD = f"db-pass-{uuid.uuid4().hex[:12]}"
SERVER_PASSWORD = f"server-pass-{uuid.uuid4().hex[:12]}"  # MLFLOW_TRACKING_PASSWORD, which a step quotes in its error
SECRETS = (ACCESS_KEY, SECRET_KEY, PASSWORD, SERVER_PASSWORD)
# A user's step that fails quoting a secret: the failure is written to the terminal, a log file and an artifact.
LEAKY_STEP = """
    import os

    if os.environ.get("LEAK_IN_STEP"):
        raise RuntimeError(f"login refused for mlflow:{os.environ['MLFLOW_TRACKING_PASSWORD']}")
"""


def _env(tracking: str = "", **more: str) -> dict[str, str]:
    """Credentials in the environment only, as a pod or CI job gets them; the password-bearing URI too."""
    env = client_env(AWS_ACCESS_KEY_ID=ACCESS_KEY, AWS_SECRET_ACCESS_KEY=SECRET_KEY)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    env["MLFLOW_TRACKING_PASSWORD"] = SERVER_PASSWORD
    if tracking:
        env["MLFLOW_TRACKING_URI"] = tracking
    return {**env, **more}


def mlops(root: Path, tracking: str, *args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "mlops_template", *args],
        cwd=root,
        env=_env(tracking, TMPDIR=str(root.parent / "tmp"), **env),
        capture_output=True,
        text=True,
        timeout=600,
    )


def leaks(text: str | bytes) -> list[str]:
    data = text.encode() if isinstance(text, str) else text
    return [s for s in SECRETS if s.encode() in data]


@pytest.fixture
def project(postgres: Postgres, s3_endpoint: str, tmp_path: Path) -> tuple[Path, str, str]:
    """A rendered project whose `secure` environment tracks into PostgreSQL and stores on S3.

    `mlops.toml` names the database without its password; the URI with it comes from MLFLOW_TRACKING_URI.
    """
    database = postgres.create_database()  # trust authentication on loopback: the password is carried, not needed
    tracking = database.replace("postgresql+psycopg2://postgres@", f"postgresql+psycopg2://postgres:{PASSWORD}@")
    bucket = make_bucket(s3_endpoint)
    root = new_project("secretive", directory=tmp_path / "secretive", lock=False)
    (tmp_path / "tmp").mkdir()  # the commands' temp folder, searched with the rest
    train = root / "src" / "secretive" / "models" / "train_model.py"
    head = "def train_model(ctx: StepContext) -> None:\n"
    train.write_text(train.read_text().replace(head, head + LEAKY_STEP))
    with open(root / "mlops.toml", "a") as toml:
        toml.write(
            f"""
[environments.secure]
storage = "s3://{bucket}/secretive"
tracking_uri = "{database}"
s3_endpoint_url = "{s3_endpoint}"
"""
        )
    return root, bucket, tracking


def test_no_secret_reaches_params_tags_artifacts_logs_output_storage_or_ps(project, s3_endpoint, monkeypatch):
    root, bucket, tracking = project
    outputs = []
    run = mlops(root, tracking, "run", "--environment", "secure")
    assert run.returncode == 0, run.stdout + run.stderr
    assert "postgres:***@" in run.stdout  # where it was tracked, its password hidden
    outputs.append(run)
    failing = mlops(  # the variable is not in the step's key: without --no-cache the step would be reused
        root, tracking, "run", "--environment", "secure", "--step", "train_model", "--no-cache", LEAK_IN_STEP="1"
    )
    assert failing.returncode == 1  # the step's error, quoting a secret, is in its traceback, log file and artifact
    assert "RuntimeError: login refused for mlflow:***" in failing.stdout + failing.stderr
    assert list(root.glob(".mlops/logs/*-train_model.log"))
    outputs += [
        failing,
        mlops(root, tracking, "runs", "--environment", "secure"),
        mlops(root, tracking, "models", "--environment", "secure"),
    ]
    assert all(o.returncode == 0 for o in outputs[2:]), [o.stderr for o in outputs]

    # `mlops ui` while it serves: its command line and its children's, as `ps` shows them.
    port = free_port()
    ui = subprocess.Popen(
        [sys.executable, "-m", "mlops_template", "ui", "--environment", "secure", "--port", str(port)],
        cwd=root,
        env=_env(tracking),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(
                    f"http://127.0.0.1:{port}/health", timeout=2
                ):
                    break
            except OSError:
                time.sleep(0.3)
        else:
            pytest.fail("mlops ui did not serve within 120 s")
        ps = subprocess.run(["ps", "-eww", "-o", "args"], capture_output=True, text=True, check=True).stdout
        assert "mlflow" in ps and str(port) in ps
        assert leaks(ps) == []
    finally:
        os.killpg(ui.pid, signal.SIGTERM)
        ui_output, _ = ui.communicate(timeout=30)
    assert leaks(ui_output) == []

    for done in outputs:
        assert leaks(done.stdout + done.stderr) == [], done.args

    # Everything MLflow recorded: params, tags, metrics' names, inputs, the registry, every artifact's bytes.
    for name, value in {**_env(), "MLFLOW_S3_ENDPOINT_URL": s3_endpoint}.items():
        monkeypatch.setenv(name, value)  # the artifacts are in the bucket, read with the same keys
    client = MlflowClient(tracking_uri=tracking, registry_uri=tracking)
    experiment = client.get_experiment_by_name("secretive")
    runs = client.search_runs([experiment.experiment_id], max_results=1000)
    assert len(runs) >= 5
    artifacts: list[str] = []
    for found in runs:
        recorded = [*found.data.params.items(), *found.data.tags.items(), *found.data.metrics]
        recorded += [(d.dataset.name, d.dataset.source, d.dataset.digest) for d in found.inputs.dataset_inputs]
        assert leaks(repr(recorded)) == [], found.info.run_id
        local = Path(client.download_artifacts(found.info.run_id, "", dst_path=str(root.parent / found.info.run_id)))
        for path in local.rglob("*"):
            if path.is_file():
                artifacts.append(path.name)
                assert leaks(path.read_bytes()) == [], path
    assert "train_model.error.log" in artifacts
    for version in client.search_model_versions("name='secretive'"):
        assert leaks(repr((version.tags, version.source, version.description))) == []
    assert leaks(repr(client.get_registered_model("secretive"))) == []

    # What the runs left on disk (the project folder, failed steps' logs, the temp folder) and in the bucket.
    for path in root.parent.rglob("*"):
        if path.is_file() and ".git" not in path.parts:
            assert leaks(path.read_bytes()) == [], path
    bucket_client = boto3.client(
        "s3",
        endpoint_url=s3_endpoint,
        region_name="us-east-1",
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY,
    )
    keys = [o["Key"] for o in bucket_client.list_objects_v2(Bucket=bucket)["Contents"]]
    assert any(k.startswith("secretive/predictions/") for k in keys)
    for key in keys:
        assert leaks(bucket_client.get_object(Bucket=bucket, Key=key)["Body"].read()) == [], key


def test_redaction_hides_secret_variables_values_in_any_text(monkeypatch):
    from mlops_template.redact import redact, redact_text

    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "hunter22")
    monkeypatch.setenv("DATABRICKS_TOKEN", "dapi-0123456789")
    monkeypatch.setenv("MY_API_KEY", "k-abcdefgh")
    monkeypatch.setenv("SHORT_SECRET", "abc")  # too short to hide without hiding ordinary words
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAPLAIN12345")  # an id, not a secret by name
    text = "login hunter22 failed; token dapi-0123456789, key k-abcdefgh, abc, AKIAPLAIN12345"
    assert redact_text(text) == "login *** failed; token ***, key ***, abc, AKIAPLAIN12345"
    assert redact("https://mlflow.example/?q=hunter22") == "https://mlflow.example/?q=***"


def test_the_mlops_command_redacts_everything_it_writes(tmp_path, monkeypatch):
    import logging
    import sys

    import click
    from click.testing import CliRunner

    from mlops_template.cli.main import main

    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "hunter22-secret")

    @main.command("leak-for-test")
    def leak() -> None:
        click.echo("echoed hunter22-secret")
        sys.stderr.write("written hunter22-secret\n")  # as Python's warnings and MLflow's own logs are
        logging.getLogger("mlops_template").warning("logged hunter22-secret")

    try:
        result = CliRunner().invoke(main, ["leak-for-test"])
    finally:
        main.commands.pop("leak-for-test")
    assert result.exit_code == 0, result.output
    assert "echoed ***" in result.output and "logged ***" in result.output and "written ***" in result.output
    assert "hunter22-secret" not in result.output


def test_a_read_only_project_logs_a_failure_into_a_folder_only_its_user_may_read(tmp_path, monkeypatch):
    from mlops_template.pipeline import failure_log

    monkeypatch.setattr(failure_log.tempfile, "tempdir", str(tmp_path))
    shared = tmp_path / f"mlops-logs-{os.getuid()}"
    shared.mkdir(mode=0o777)
    shared.chmod(0o777)  # made by someone else, or open to all: not used
    config = type("C", (), {"root": tmp_path / "missing" / "ro"})()
    (tmp_path / "missing").write_text("a file where the project folder would be: cannot be written")
    path = failure_log._save_traceback(config, "run", "step", "text")
    assert path.parent != shared and path.read_text() == "text"
    assert path.parent.stat().st_mode & 0o077 == 0
    shared.chmod(0o700)
    assert failure_log._save_traceback(config, "run2", "step", "text").parent == shared
