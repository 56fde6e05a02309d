"""Shared fixtures: a real S3 API on loopback, fake AWS credentials, and `mlops.toml` writers."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

# MLflow must never phone home from a test run; set before anything imports it.
os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"

_SERVER_START_TIMEOUT = 30.0

MINIMAL_CONFIG = """\
[project]
name = "demo"
package = "demo"

[environments.local]
storage = "data"
tracking_uri = "sqlite:///mlruns.db"
"""


@pytest.fixture(scope="session", autouse=True)
def _no_telemetry() -> None:
    """Keep telemetry off even if a test or plugin reset the environment."""
    os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_until_up(url: str, process: subprocess.Popen, log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback, never a proxy
    while time.monotonic() < deadline:
        if process.poll() is not None:
            output = log.read_text(errors="replace")
            raise RuntimeError(f"moto server exited with code {process.returncode}:\n{output}")
        try:
            opener.open(f"{url}/moto-api/", timeout=1).close()
            return
        except urllib.error.HTTPError:
            return  # any HTTP answer means the server is serving
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"moto server did not answer on {url} within {timeout:.0f}s")


@pytest.fixture(scope="session")
def s3_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The URL of moto's standalone S3 server, run as a real process on 127.0.0.1.

    moto stands in for AWS S3 only: clients reach it over HTTP on loopback
    through the same boto3/s3fs code path they use against AWS. Its request
    log goes to a file (a pipe nobody reads would fill up and block the server).
    """
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp_path_factory.mktemp("moto") / "server.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        _wait_until_up(url, process, log, _SERVER_START_TIMEOUT)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="module")
def shared_db(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One SQLite tracking store per test module, so its tables are created once; each test has its own experiment."""
    return f"sqlite:///{tmp_path_factory.mktemp('tracking') / 'mlruns.db'}"


@pytest.fixture
def tiny_project(tmp_path: Path, shared_db: str, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A project folder (no package: tests pass their own pipeline) with a local environment on tmp storage.

    Its experiment is named uniquely, and the MLOPS_/MLFLOW_ variables that would redirect it are unset.
    """
    for var in ("MLOPS_ENVIRONMENT", "MLOPS_STORAGE", "MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "MLFLOW_RUN_ID"):
        monkeypatch.delenv(var, raising=False)
    root = tmp_path / "project"
    root.mkdir()
    (root / "mlops.toml").write_text(
        f"""\
[project]
name = "tiny-{uuid.uuid4().hex[:12]}"
package = "tiny"

[environments.local]
storage = "{tmp_path / "storage"}"
tracking_uri = "{shared_db}"

[steps.make.params]
rows = 4
""",
        encoding="utf-8",
    )
    return root


@pytest.fixture
def aws_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fake AWS credentials, so nothing can reach a real account."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")


@pytest.fixture
def s3_bucket(s3_endpoint: str, aws_credentials: None) -> str:
    """A fresh, uniquely named bucket on the moto S3 server (a stand-in for AWS S3 only).

    The bucket is reached over HTTP on loopback, through the same s3fs code
    path as AWS; the credentials are fake and set for this test only.
    """
    import boto3

    name = f"test-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1").create_bucket(Bucket=name)
    return name


@pytest.fixture
def write_config(tmp_path: Path) -> Callable[..., Path]:
    """Write an `mlops.toml` into `tmp_path` (or `root`) and return the project folder."""

    def write(text: str = MINIMAL_CONFIG, root: Path | None = None) -> Path:
        root = root or tmp_path
        root.mkdir(parents=True, exist_ok=True)
        (root / "mlops.toml").write_text(text, encoding="utf-8")
        return root

    return write
