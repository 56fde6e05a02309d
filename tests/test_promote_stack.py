"""Promotion between two team stacks: `dev` and `prod` each have an `mlflow server` (PostgreSQL, artifacts
proxied to a bucket of its own) and keep their data in that bucket (see `stack.py`).

The template's pipeline runs once on `dev`; its v1 is promoted to `prod`, where `predict` then uses it.
What each side holds is read back from the buckets and through the servers' REST API.
"""

from __future__ import annotations

import io
import os
import re
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner
from conftest import AWS_OVERRIDES, FAKE_AWS
from stack import MLFLOW_OVERRIDES, MlflowServer, running_mlflow_servers
from test_team_stack import api, bucket_keys, s3

from mlops_template.cli.main import main
from mlops_template.models.model_files import sha256 as directory_sha256
from mlops_template.scaffold.new import new_project

NAME = "promostack"
PREFIX = "proj"  # each environment's storage: s3://<its bucket>/proj


def environment(name: str, server: MlflowServer) -> str:
    return (
        f"[environments.{name}]\n"
        f'storage = "s3://{server.bucket}/{PREFIX}"\n'
        f'tracking_uri = "{server.url}"\n'
        f's3_endpoint_url = "{server.s3_endpoint}"\n\n'
    )


@pytest.fixture(scope="module")
def servers(postgres, s3_endpoint: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[MlflowServer, ...]]:
    """`dev`'s and `prod`'s servers, each with its own database and bucket, started side by side."""
    folders = [tmp_path_factory.mktemp(f"{name}-server") for name in ("dev", "prod")]
    with running_mlflow_servers(postgres, s3_endpoint, *folders) as started:
        yield started


@pytest.fixture(scope="module")
def dev_server(servers) -> MlflowServer:
    return servers[0]


@pytest.fixture(scope="module")
def prod_server(servers) -> MlflowServer:
    return servers[1]


@pytest.fixture(scope="module")
def variables() -> Iterator[None]:
    """The fake AWS keys, and no variable that would send MLflow, mlops or AWS elsewhere."""
    with pytest.MonkeyPatch.context() as mp:
        for name in (*AWS_OVERRIDES, *MLFLOW_OVERRIDES, "MLOPS_ENVIRONMENT", "MLOPS_STORAGE"):
            mp.delenv(name, raising=False)
        for name, value in FAKE_AWS.items():
            mp.setenv(name, value)
        yield


@pytest.fixture(scope="module")
def project(variables, dev_server, prod_server, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A rendered project whose pipeline ran once on `dev`, up to training (v1 is dev's champion); `prod` is empty."""
    root = new_project(NAME, directory=tmp_path_factory.mktemp("promote-stack") / NAME, lock=False)
    toml = root / "mlops.toml"
    text = toml.read_text()
    for name, server in (("dev", dev_server), ("prod", prod_server)):
        text, found = re.subn(rf"\[environments\.{name}\]\n(?:[^\[\n].*\n)*", environment(name, server), text)
        assert found == 1
    toml.write_text(text)
    result = cli(
        root, "run", "--environment", "dev", "--step", "make_data", "--step", "feat_data", "--step", "train_model"
    )
    assert result.exit_code == 0, result.output
    return root


def cli(project: Path, *args: str):
    return CliRunner().invoke(main, [*args, "--project", str(project)])


def version_tags(server: MlflowServer, version: str) -> dict[str, str]:
    found = api(server, "model-versions/get", name=NAME, version=version)["model_version"]
    return {t["key"]: t["value"] for t in found["tags"]} | {"source": found["source"]}


def read(server: MlflowServer, key: str) -> bytes:
    return s3(server).get_object(Bucket=server.bucket, Key=key)["Body"].read()


@pytest.fixture(scope="module")
def promoted(project, dev_server) -> tuple[dict[str, str], object]:
    """dev's v1 tags as they were before, and the output of its first promotion to `prod` (tests run in any order)."""
    dev_tags = version_tags(dev_server, "1")
    return dev_tags, cli(project, "promote", "1", "--from", "dev", "--to", "prod")


def test_a_version_moves_from_dev_to_prod_with_its_data_and_prod_predicts_with_it(
    project, promoted, dev_server, prod_server, tmp_path
):
    dev_tags, result = promoted

    assert result.exit_code == 0, result.output
    seconds = float(re.search(r"points at it \(([\d.]+) s\)", result.output).group(1))
    print(f"promotion of the template's model between the two servers: {seconds:.1f} s")
    model = api(prod_server, "registered-models/get", name=NAME)["registered_model"]
    assert {(a["alias"], a["version"]) for a in model["aliases"]} == {("champion", "1")}
    tags = version_tags(prod_server, "1")
    assert tags["mlops.promoted_from"] == "dev:1"
    assert tags["mlops.promoted_from_uri"] == dev_server.url
    for key in ("mlops.model_sha256", "mlops.training_data", "mlops.heldout_data"):
        assert tags[key] == dev_tags[key]
    # prod's bucket: the training and held-out snapshots under the same ids, the same bytes as dev's.
    prod_keys = bucket_keys(prod_server)
    for ref in (dev_tags["mlops.training_data"], dev_tags["mlops.heldout_data"]):
        dataset, snapshot_id = ref.split(":")
        for suffix in (".parquet", ".json"):
            key = f"{PREFIX}/snapshots/{dataset}/{snapshot_id}{suffix}"
            assert key in prod_keys and read(prod_server, key) == read(dev_server, key)
    # The model's files as prod's server stored them (proxied into prod's bucket): the same sha256.
    model_id = tags["source"].removeprefix("models:/")
    stored = [k for k in prod_keys if f"/models/{model_id}/artifacts/" in k]
    assert any(k.endswith("/MLmodel") for k in stored)
    for key in stored:
        local = tmp_path / "model" / key.split("/artifacts/", 1)[1]
        local.parent.mkdir(parents=True, exist_ok=True)
        local.write_bytes(read(prod_server, key))
    assert directory_sha256(tmp_path / "model") == dev_tags["mlops.model_sha256"]
    assert not [k for k in bucket_keys(dev_server) if f"/models/{model_id}/" in k]  # dev got nothing new

    predicted = cli(project, "run", "--environment", "prod", "--step", "predict")

    assert predicted.exit_code == 0, predicted.output
    assert f"model {NAME} v1" in predicted.output
    run_id = re.search(r"pipeline run ([0-9a-f]{32}) on prod", predicted.output).group(1)
    predictions = pd.read_parquet(io.BytesIO(read(prod_server, f"{PREFIX}/predictions/{run_id}.parquet")))
    heldout = pd.read_parquet(io.BytesIO(read(dev_server, f"{PREFIX}/datasets/heldout.parquet")))
    assert len(predictions) == len(heldout) and set(predictions["model_version"]) == {1}
    assert os.environ.get("MLFLOW_S3_ENDPOINT_URL") is None  # neither environment's settings stayed behind


def test_promoting_the_same_version_again_writes_no_object_and_no_version(project, promoted, prod_server):
    assert promoted[1].exit_code == 0, promoted[1].output
    before = bucket_keys(prod_server)
    versions = api(prod_server, "model-versions/search", filter=f"name='{NAME}'")["model_versions"]

    again = cli(project, "promote", "1", "--from", "dev", "--to", "prod")

    assert again.exit_code == 0, again.output
    assert "is prod's v1 already" in again.output
    assert bucket_keys(prod_server) == before
    assert api(prod_server, "model-versions/search", filter=f"name='{NAME}'")["model_versions"] == versions
