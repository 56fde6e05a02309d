"""Two environments used one after the other in one process (a notebook, a worker) do not leak into each other.

Each environment has its own S3 endpoint (a moto server of its own, checking
keys against its own IAM users, so a request signed with the other
environment's profile is refused), its own AWS profile (keys that differ, in
a temporary AWS config and credentials file) and region. MLflow keeps each
environment's artifacts in that environment's bucket, so its S3 client, which
reads the endpoint and profile from the process environment, is used too.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import boto3
import mlflow
import pandas as pd
import pytest
from conftest import moto_server, store_client

from mlops_template import Pipeline, StepContext, load_config
from mlops_template.config import environ
from mlops_template.tracking.connect import connect

REGIONS = {"dev": "eu-west-1", "prod": "us-west-2"}
_ALLOW_ALL = json.dumps({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]})
_LOOPBACK = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@dataclass(frozen=True)
class Account:
    """One environment's S3 endpoint, the keys it accepts and its bucket."""

    endpoint: str
    key_id: str
    secret: str
    bucket: str
    region: str

    def s3(self):
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name=self.region,
            aws_access_key_id=self.key_id,
            aws_secret_access_key=self.secret,
        )


def _open_account(endpoint: str, region: str) -> Account:
    """An IAM user allowed everything, its keys and a bucket; from then on the server refuses any other keys."""
    setup = {"endpoint_url": endpoint, "aws_access_key_id": "setup", "aws_secret_access_key": "setup"}
    iam = boto3.client("iam", region_name="us-east-1", **setup)
    user = f"ml-{uuid.uuid4().hex[:8]}"
    iam.create_user(UserName=user)
    iam.put_user_policy(UserName=user, PolicyName="all", PolicyDocument=_ALLOW_ALL)
    key = iam.create_access_key(UserName=user)["AccessKey"]
    bucket = f"{region}-{uuid.uuid4().hex[:8]}"
    boto3.client("s3", region_name=region, **setup).create_bucket(
        Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": region}
    )
    enforce = urllib.request.Request(
        f"{endpoint}/moto-api/reset-auth", data=b"0", headers={"Content-Type": "text/plain"}, method="POST"
    )
    _LOOPBACK.open(enforce).close()
    return Account(endpoint, key["AccessKeyId"], key["SecretAccessKey"], bucket, region)


@pytest.fixture(scope="module")
def accounts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Account]]:
    """`dev` and `prod`, each on a moto server of its own."""
    logs = tmp_path_factory.mktemp("moto-accounts")
    with ExitStack() as stack, pytest.MonkeyPatch.context() as mp:
        mp.setenv("NO_PROXY", "127.0.0.1,localhost")
        mp.setenv("no_proxy", "127.0.0.1,localhost")
        endpoints = {name: stack.enter_context(moto_server(logs)) for name in REGIONS}
        yield {name: _open_account(endpoints[name], region) for name, region in REGIONS.items()}


@pytest.fixture
def profiles(tmp_path: Path, accounts: dict[str, Account], monkeypatch: pytest.MonkeyPatch) -> None:
    """AWS profiles `dev` and `prod` with their accounts' keys and regions; no other credentials anywhere."""
    config, credentials = tmp_path / "aws-config", tmp_path / "aws-credentials"
    config.write_text("".join(f"[profile {n}]\nregion = {a.region}\n" for n, a in accounts.items()))
    credentials.write_text(
        "".join(
            f"[{n}]\naws_access_key_id = {a.key_id}\naws_secret_access_key = {a.secret}\n" for n, a in accounts.items()
        )
    )
    for name in [
        v for v in os.environ if v.startswith(("AWS_", "MLOPS_", "MLFLOW_")) and v != "MLFLOW_DISABLE_TELEMETRY"
    ]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(config))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(credentials))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory, accounts: dict[str, Account]) -> tuple[str, Path]:
    """The project's name and a folder with `dev.db` and `prod.db`, made once: tests take copies.

    Each store's experiment keeps its artifacts in the environment's bucket, so MLflow's S3 client carries them.
    """
    folder = tmp_path_factory.mktemp("stores")
    name = f"two-envs-{uuid.uuid4().hex[:8]}"
    for env, account in accounts.items():
        store_client(f"sqlite:///{folder / f'{env}.db'}").create_experiment(
            name, artifact_location=f"s3://{account.bucket}/mlflow"
        )
    return name, folder


@pytest.fixture
def project(tmp_path: Path, accounts: dict[str, Account], stores: tuple[str, Path], profiles: None) -> Path:
    """A project whose `dev` and `prod` differ in everything, each tracked in its own SQLite store."""
    name, folder = stores
    root = tmp_path / "project"
    root.mkdir()
    tables = [
        f'[project]\nname = "{name}"\npackage = "two_envs"\n',
        "[model]\ngate = { min = false }\n",
        '[environments.local]\nstorage = "data"\ntracking_uri = "sqlite:///local.db"\n',
    ]
    for env, account in accounts.items():
        shutil.copy(folder / f"{env}.db", root / f"{env}.db")
        tables.append(
            f"[environments.{env}]\n"
            f'storage = "s3://{account.bucket}/project"\n'
            f'tracking_uri = "sqlite:///{env}.db"\n'
            f'aws_profile = "{env}"\n'
            f'aws_region = "{account.region}"\n'
            f's3_endpoint_url = "{account.endpoint}"\n'
        )
    (root / "mlops.toml").write_text("\n".join(tables), encoding="utf-8")
    return root


def make(ctx: StepContext) -> None:
    """Data through storage, a file through MLflow's artifact store: both go to the environment's bucket."""
    ctx.write("where", pd.DataFrame({"environment": [ctx.environment.name]}))
    mlflow.log_text(ctx.environment.name, "where.txt")


def objects(account: Account) -> dict[str, list[str]]:
    """Every bucket on the account's endpoint and the keys in it."""
    s3 = account.s3()
    buckets = [b["Name"] for b in s3.list_buckets()["Buckets"]]
    return {b: sorted(o["Key"] for o in s3.list_objects_v2(Bucket=b).get("Contents", [])) for b in buckets}


def test_dev_then_prod_in_one_process_each_reach_only_their_own_endpoint(project, accounts):
    before = dict(os.environ)
    pipeline = Pipeline([make])
    results = {env: pipeline.run(environment=env, project=project) for env in ("dev", "prod")}
    assert dict(os.environ) == before
    again = pipeline.run(environment="dev", project=project)  # and back: nothing of prod's stayed either
    assert dict(os.environ) == before

    for env, account in accounts.items():
        found = objects(account)
        assert list(found) == [account.bucket]  # the other environment made nothing here
        keys = found[account.bucket]
        assert "project/datasets/where.parquet" in keys
        made = [results[env], *([again] if env == "dev" else [])]
        artifacts = {k for k in keys if k.startswith("mlflow/")}
        written = {f"mlflow/{r.steps[0].run_id}/artifacts/where.txt" for r in made}
        recorded = {f"mlflow/{i}/artifacts/mlops/environment.json" for r in made for i in (r.run_id, r.steps[0].run_id)}
        assert artifacts == written | recorded
        s3 = account.s3()
        for key in written:
            assert s3.get_object(Bucket=account.bucket, Key=key)["Body"].read() == env.encode()
        body = s3.get_object(Bucket=account.bucket, Key="project/datasets/where.parquet")["Body"].read()
        table = pd.read_parquet(io.BytesIO(body))
        assert table["environment"].tolist() == [env]


def test_an_environment_in_use_is_not_read_back_as_the_users_override(project, accounts):
    config = load_config(project)
    before = dict(os.environ)
    with environ.activate(config.environment("dev")):
        assert (os.environ["AWS_PROFILE"], os.environ["AWS_DEFAULT_REGION"]) == ("dev", REGIONS["dev"])
        assert os.environ["MLFLOW_S3_ENDPOINT_URL"] == accounts["dev"].endpoint
        prod = config.environment("prod")
        local = config.environment("local")
    assert (prod.aws_profile, prod.aws_region, prod.s3_endpoint_url) == ("prod", "us-west-2", accounts["prod"].endpoint)
    assert (local.aws_profile, local.aws_region, local.s3_endpoint_url) == (None, None, None)
    assert dict(os.environ) == before


def test_the_users_own_variables_stay_overrides_and_come_back(project, accounts, monkeypatch):
    monkeypatch.setenv("AWS_PROFILE", "prod")
    monkeypatch.setenv("MLFLOW_S3_ENDPOINT_URL", "http://127.0.0.1:9")
    config = load_config(project)
    before = dict(os.environ)
    with environ.activate(config.environment("dev")):
        assert os.environ["AWS_PROFILE"] == "prod"  # the user's choice beats mlops.toml
        assert os.environ["MLFLOW_S3_ENDPOINT_URL"] == accounts["dev"].endpoint
        assert config.environment("local").aws_profile == "prod"
    assert dict(os.environ) == before


def test_connect_outside_a_scope_leaves_the_last_environments_values_and_no_override(project, accounts):
    """A bare `connect` (a notebook) sets the variables; the next one replaces them; neither reads the other's."""
    config = load_config(project)
    with environ.scope():
        connect(config, config.environment("dev"))
        connect(config, config.environment("local"))
        assert "MLFLOW_S3_ENDPOINT_URL" not in os.environ and "AWS_PROFILE" not in os.environ
        connect(config, config.environment("prod"))
        assert os.environ["AWS_PROFILE"] == "prod"
        assert config.environment("dev").aws_profile == "dev"
