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
SECRETS = (ACCESS_KEY, SECRET_KEY, PASSWORD)


def _env(tracking: str = "") -> dict[str, str]:
    """Credentials in the environment only, as a pod or CI job gets them; the password-bearing URI too."""
    env = client_env(AWS_ACCESS_KEY_ID=ACCESS_KEY, AWS_SECRET_ACCESS_KEY=SECRET_KEY)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    if tracking:
        env["MLFLOW_TRACKING_URI"] = tracking
    return env


def mlops(root: Path, tracking: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "mlops_template", *args],
        cwd=root,
        env=_env(tracking),
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
    failing = mlops(root, tracking, "run", "--environment", "secure", "--step", "train_model", "-P", "target=nope")
    assert failing.returncode == 1  # a failed step's traceback is written out: it must not carry them either
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
    for found in runs:
        recorded = [*found.data.params.items(), *found.data.tags.items(), *found.data.metrics]
        recorded += [(d.dataset.name, d.dataset.source, d.dataset.digest) for d in found.inputs.dataset_inputs]
        assert leaks(repr(recorded)) == [], found.info.run_id
        local = Path(client.download_artifacts(found.info.run_id, "", dst_path=str(root.parent / found.info.run_id)))
        for path in local.rglob("*"):
            if path.is_file():
                assert leaks(path.read_bytes()) == [], path
    for version in client.search_model_versions("name='secretive'"):
        assert leaks(repr((version.tags, version.source, version.description))) == []
    assert leaks(repr(client.get_registered_model("secretive"))) == []

    # What the runs left on disk (the project folder, failed steps' logs) and in the bucket.
    for path in root.rglob("*"):
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
