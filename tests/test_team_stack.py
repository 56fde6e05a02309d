"""A rendered project against a team's stack: `mlflow server` on PostgreSQL, model artifacts proxied to S3, data on S3.

The project's `dev` environment points at the stack (see `stack.py`); `mlops run`
runs as its own process, as a team member would run it, with credentials only in
AWS_* variables. What the run left is read back from the bucket and through the
server's REST API.
"""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
import urllib.parse
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path

import boto3
import pandas as pd
import pytest
from stack import MlflowServer, client_env

from mlops_template.models.model_files import sha256 as directory_sha256
from mlops_template.scaffold.new import new_project

NAME = "teamp"
PREFIX = "proj"  # the dev environment's storage: s3://<bucket>/proj
STEPS = ["make_data", "feat_data", "train_model", "predict"]
SECRET = f"stack-secret-{uuid.uuid4().hex}"  # this module's fake AWS secret key, to look for where it must not be


@dataclass(frozen=True)
class DevRun:
    """A rendered project after one whole `mlops run --environment dev`, and what it printed."""

    root: Path
    output: str
    run_id: str  # the pipeline run
    before: set[str]  # the project's files before the run, and after it
    after: set[str]


def point_dev_at(root: Path, server: MlflowServer) -> None:
    """Replace the template's `[environments.dev]` by one on the stack: storage, tracking server, S3 endpoint."""
    toml = root / "mlops.toml"
    dev = (
        "[environments.dev]\n"
        f'storage = "s3://{server.bucket}/{PREFIX}"\n'
        f'tracking_uri = "{server.url}"\n'
        f's3_endpoint_url = "{server.s3_endpoint}"\n'
    )
    text, found = re.subn(r"\[environments\.dev\]\n(?:[^\[\n].*\n)*", dev, toml.read_text())
    assert found == 1
    toml.write_text(text)


def files(root: Path) -> set[str]:
    """Every path in the project folder, its git internals aside."""
    return {str(p.relative_to(root)) for p in root.rglob("*") if ".git" not in p.relative_to(root).parts[:1]}


def mlops(root: Path, *args: str) -> subprocess.CompletedProcess:
    """`mlops ARGS` in the project folder, a process of its own; the AWS keys are the only credentials it gets."""
    env = client_env(AWS_SECRET_ACCESS_KEY=SECRET)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"  # as in an activated venv
    return subprocess.run(
        [sys.executable, "-m", "mlops_template", *args], cwd=root, env=env, capture_output=True, text=True, timeout=600
    )


def pipeline_run_id(output: str) -> str:
    return re.search(r"pipeline run ([0-9a-f]{32}) on dev", output).group(1)


def api(server: MlflowServer, path: str, body: dict | None = None, **query: str) -> dict:
    """One call of the server's REST API (`/api/2.0/mlflow/<path>`): GET with `query`, or POST of `body`."""
    url = f"{server.url}/api/2.0/mlflow/{path}"
    if query:
        url += "?" + urllib.parse.urlencode(query)
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(request, timeout=30) as response:
        return json.load(response)


def bucket_keys(server: MlflowServer) -> set[str]:
    pages = s3(server).get_paginator("list_objects_v2").paginate(Bucket=server.bucket)
    return {item["Key"] for page in pages for item in page.get("Contents", [])}


def s3(server: MlflowServer):
    return boto3.client(
        "s3",
        endpoint_url=server.s3_endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key=SECRET,
    )


def runs_of(server: MlflowServer, experiment_id: str) -> list[dict]:
    """Every run of the experiment, oldest first, its tags and params as dicts."""
    found = api(server, "runs/search", {"experiment_ids": [experiment_id], "max_results": 1000})["runs"]
    for run in found:
        run["tags"] = {t["key"]: t["value"] for t in run["data"].get("tags", [])}
        run["params"] = {p["key"]: p["value"] for p in run["data"].get("params", [])}
    return sorted(found, key=lambda r: int(r["info"]["start_time"]))


@pytest.fixture(scope="module")
def dev_run(mlflow_server: MlflowServer, tmp_path_factory: pytest.TempPathFactory) -> DevRun:
    """A project whose whole pipeline ran once on the stack: v1 is champion. Tests may add runs, never remove."""
    root = new_project(NAME, directory=tmp_path_factory.mktemp("team") / NAME, lock=False)
    point_dev_at(root, mlflow_server)
    before = files(root)
    result = mlops(root, "run", "--environment", "dev")
    assert result.returncode == 0, result.stdout + result.stderr
    return DevRun(root, result.stdout + result.stderr, pipeline_run_id(result.stdout), before, files(root))


def test_whole_pipeline_on_the_stack_tracks_in_the_server_and_stores_in_the_bucket(dev_run, mlflow_server, tmp_path):
    experiment = api(mlflow_server, "experiments/get-by-name", experiment_name=NAME)["experiment"]
    assert experiment["artifact_location"].startswith("mlflow-artifacts:/")  # the server chose it

    runs = runs_of(mlflow_server, experiment["experiment_id"])
    parent = next(r for r in runs if r["info"]["run_id"] == dev_run.run_id)
    children = [r for r in runs if r["tags"].get("mlflow.parentRunId") == dev_run.run_id]
    assert parent["info"]["status"] == "FINISHED"
    assert parent["tags"]["mlops.environment"] == "dev"
    assert parent["tags"]["mlops.pipeline"] == NAME
    assert parent["tags"]["mlops.steps"] == ",".join(STEPS)
    assert [c["tags"]["mlops.step"] for c in children] == STEPS
    assert {c["info"]["status"] for c in children} == {"FINISHED"}
    train = children[2]
    assert train["tags"]["mlops.gate"] == "passed"

    model = api(mlflow_server, "registered-models/get", name=NAME)["registered_model"]
    assert {(a["alias"], a["version"]) for a in model["aliases"]} == {("champion", "1")}
    version = api(mlflow_server, "model-versions/get", name=NAME, version="1")["model_version"]
    tags = {t["key"]: t["value"] for t in version["tags"]}
    assert re.fullmatch(r"[0-9a-f]{64}", tags["mlops.model_sha256"])
    assert re.fullmatch(r"train:[0-9a-f]{16}", tags["mlops.training_data"])
    assert version["run_id"] == train["info"]["run_id"]
    model_id = version["source"].removeprefix("models:/")
    assert version["source"] == f"models:/{model_id}" and model_id.startswith("m-")
    logged = api(mlflow_server, f"logged-models/{model_id}")["model"]["info"]
    artifacts = f"mlartifacts/{experiment['experiment_id']}/models/{model_id}/artifacts"
    assert logged["artifact_uri"] == f"mlflow-artifacts:/{artifacts.removeprefix('mlartifacts/')}"  # proxied

    keys = bucket_keys(mlflow_server)
    assert {f"{PREFIX}/datasets/{name}.parquet" for name in ("processed", "featurized", "train", "heldout")} <= keys
    for name in ("processed", "featurized", "train", "heldout"):
        assert any(re.fullmatch(rf"{PREFIX}/snapshots/{name}/[0-9a-f]{{16}}\.json", k) for k in keys), name
    assert f"{PREFIX}/models/{NAME}/v1/MLmodel" in keys
    assert f"{PREFIX}/predictions/{dev_run.run_id}.parquet" in keys
    # The files the server stored for the logged model are those the version's sha256 was computed over.
    model_keys = [k for k in keys if k.startswith(f"{artifacts}/")]
    assert f"{artifacts}/MLmodel" in model_keys
    for key in model_keys:
        local = tmp_path / "model" / key.removeprefix(f"{artifacts}/")
        local.parent.mkdir(parents=True, exist_ok=True)
        local.write_bytes(s3(mlflow_server).get_object(Bucket=mlflow_server.bucket, Key=key)["Body"].read())
    assert directory_sha256(tmp_path / "model") == tags["mlops.model_sha256"]

    assert dev_run.after == dev_run.before  # no mlruns/, mlflow.db, .mlops/ or anything else in the project
    assert "View run" not in dev_run.output and "View experiment" not in dev_run.output  # MLflow's own lines
    assert "✓ train_model" in dev_run.output and f"{NAME} v1 is champion" in dev_run.output
    assert f"tracked in {mlflow_server.url}" in dev_run.output
    recorded = [v for r in runs for v in (*r["tags"].values(), *r["params"].values())]
    assert all(SECRET not in text for text in [*recorded, dev_run.output])


def test_predict_alone_loads_the_champion_through_the_server(dev_run, mlflow_server):
    experiment_id = api(mlflow_server, "experiments/get-by-name", experiment_name=NAME)["experiment"]["experiment_id"]
    model_id = api(mlflow_server, "model-versions/get", name=NAME, version="1")["model_version"]["source"][8:]
    served_before = mlflow_server.log.read_text().count(
        f"/mlflow-artifacts/presigned/{experiment_id}/models/{model_id}/"
    )

    result = mlops(dev_run.root, "run", "--environment", "dev", "--step", "predict", "--no-cache")

    assert result.returncode == 0, result.stdout + result.stderr
    assert f"model {NAME} v1" in result.stdout
    run_id = pipeline_run_id(result.stdout)
    body = s3(mlflow_server).get_object(Bucket=mlflow_server.bucket, Key=f"{PREFIX}/predictions/{run_id}.parquet")
    predictions = pd.read_parquet(io.BytesIO(body["Body"].read()))
    heldout = s3(mlflow_server).get_object(Bucket=mlflow_server.bucket, Key=f"{PREFIX}/datasets/heldout.parquet")
    assert len(predictions) == len(pd.read_parquet(io.BytesIO(heldout["Body"].read())))
    assert set(predictions["model_version"]) == {1}
    # The champion's files were found through the server (which hands out their download URLs).
    served = mlflow_server.log.read_text().count(f"/mlflow-artifacts/presigned/{experiment_id}/models/{model_id}/")
    assert served > served_before
    step = next(r for r in runs_of(mlflow_server, experiment_id) if r["tags"].get("mlflow.parentRunId") == run_id)
    assert step["tags"]["mlops.model_version"] == "1"
    assert "View run" not in result.stdout


def _open_on_the_server(root: str, key: str, barrier, results) -> None:
    """In a forked process: reach the stack as `dev`, wait for the others, then open the key's pipeline run."""
    import mlflow

    from mlops_template.config.environ import scope
    from mlops_template.config.load import load_config
    from mlops_template.pipeline.coordination import open_parent
    from mlops_template.storage import open_storage
    from mlops_template.tracking.connect import connect

    os.environ.update(client_env(AWS_SECRET_ACCESS_KEY=SECRET))
    config = load_config(root)
    with scope():
        env = config.environment("dev")
        experiment_id = connect(config, env)
        storage, client = open_storage(env), mlflow.MlflowClient()
        barrier.wait(timeout=120)
        parent = open_parent(client, storage, experiment_id, key, plan=STEPS, plan_given=False, tags={})
    results.put(parent.run_id)


def test_same_key_started_at_once_on_the_server_makes_one_parent_every_time(dev_run, mlflow_server):
    """The key's record is a conditional PUT on S3 (moto checks If-None-Match; AWS S3 makes it atomic)."""
    import multiprocessing

    context = multiprocessing.get_context("fork")
    experiment_id = api(mlflow_server, "experiments/get-by-name", experiment_name=NAME)["experiment"]["experiment_id"]
    for attempt in range(10):
        key = f"server-race-{uuid.uuid4().hex[:8]}"
        barrier, results = context.Barrier(3), context.Queue()
        processes = [
            context.Process(target=_open_on_the_server, args=(str(dev_run.root), key, barrier, results))
            for _ in range(3)
        ]
        for process in processes:
            process.start()
        for process in processes:
            process.join(timeout=180)
        assert [p.exitcode for p in processes] == [0, 0, 0], attempt
        joined = {results.get(timeout=5) for _ in processes}
        active = [r for r in runs_of(mlflow_server, experiment_id) if r["tags"].get("mlops.pipeline_run") == key]
        assert len(joined) == 1 and [r["info"]["run_id"] for r in active] == list(joined), attempt
        record = s3(mlflow_server).get_object(Bucket=mlflow_server.bucket, Key=f"{PREFIX}/pipeline-runs/{key}.json")
        assert json.loads(record["Body"].read())["run_id"] in joined
