"""Shared fixtures: a real S3 API on loopback, fake AWS credentials, `mlops.toml` writers, and a trained project.

The trained project is made once per session (a whole `mlops run` of a rendered project is the
slowest thing the tests do). Tests that only look at it share it; a test that runs steps, edits
files or counts runs takes `trained_copy`, its own copy, so no test depends on another's order.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

# The team stack's fixtures: a PostgreSQL server and an MLflow tracking server over it.
pytest_plugins = ["stack"]

# MLflow must never phone home from a test run; set before anything imports it.
os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"

_SERVER_START_TIMEOUT = 30.0

# What `scripts/test.sh --quick` leaves out: tests of the image build, Airflow, and the PostgreSQL stack.
_HEAVY_MODULES = {"test_image": "container", "test_dag": "airflow"}
_HEAVY_FIXTURES = {"postgres": "postgres", "mlflow_server": "postgres"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark each test by the heavy component it needs, so a quick run can deselect them by marker."""
    for item in items:
        module = item.module.__name__.rpartition(".")[2] if item.module else ""
        markers = {_HEAVY_MODULES.get(module)} | {_HEAVY_FIXTURES.get(f) for f in item.fixturenames}
        for marker in sorted(m for m in markers if m):
            item.add_marker(marker)


PROJECT_CONFIG = """\
[project]
name = "demo"
package = "demo"

[environments.local]
storage = "data"
tracking_uri = "sqlite:///mlruns.db"
"""
NO_FLOOR = "[model]\ngate = { min = false }\n"  # a gate on beat_champion alone: min is required
MINIMAL_CONFIG = PROJECT_CONFIG + "\n" + NO_FLOOR


@pytest.fixture(scope="session", autouse=True)
def _no_telemetry() -> None:
    """Keep telemetry off even if a test or plugin reset the environment."""
    os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"


def store_client(uri: str):
    """An MlflowClient of the tracking store and model registry at `uri`.

    Given only a tracking URI, MLflow uses the registry URI last set in this process (each `mlops run`
    sets its project's), so a test could read another project's registry.
    """
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def project_client(project: Path):
    """An MlflowClient of a project's own SQLite store (`mlruns.db`), registry included."""
    return store_client(f"sqlite:///{project / 'mlruns.db'}")


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


@contextmanager
def moto_server(log_dir: Path, **variables: str) -> Iterator[str]:
    """Run moto's standalone S3 server as a real process on 127.0.0.1 and yield its URL; `variables` go to its environment.

    moto stands in for AWS S3 only: clients reach it over HTTP on loopback
    through the same boto3/s3fs code path they use against AWS. Its request
    log goes to a file (a pipe nobody reads would fill up and block the server).
    With `INITIAL_NO_AUTH_ACTION_COUNT="0"` it checks every request's keys
    against its own IAM users, so unknown keys are refused as AWS would.
    """
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    log = log_dir / f"moto-{port}.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, **variables},
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


@pytest.fixture(scope="session")
def s3_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The URL of moto's standalone S3 server (see `moto_server`), shared by the session."""
    with moto_server(tmp_path_factory.mktemp("moto")) as url:
        yield url


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

[model]
gate = {{ min = false }}

[environments.local]
storage = "{tmp_path / "storage"}"
tracking_uri = "{shared_db}"

[steps.make.params]
rows = 4
""",
        encoding="utf-8",
    )
    return root


# Fake AWS credentials (so nothing can reach a real account), and the variables that would override them.
FAKE_AWS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "NO_PROXY": "127.0.0.1,localhost",
    "no_proxy": "127.0.0.1,localhost",
}
AWS_OVERRIDES = ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3")


@pytest.fixture
def aws_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fake AWS credentials, so nothing can reach a real account."""
    for name, value in FAKE_AWS.items():
        monkeypatch.setenv(name, value)
    for name in AWS_OVERRIDES:
        monkeypatch.delenv(name, raising=False)


def make_bucket(endpoint: str) -> str:
    """Create a fresh, uniquely named bucket on the moto S3 server (with the fake credentials); returns its name."""
    import boto3

    name = f"test-{uuid.uuid4().hex[:12]}"
    keys = {
        "aws_access_key_id": FAKE_AWS["AWS_ACCESS_KEY_ID"],
        "aws_secret_access_key": FAKE_AWS["AWS_SECRET_ACCESS_KEY"],
    }
    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", **keys).create_bucket(Bucket=name)
    return name


@pytest.fixture
def s3_bucket(s3_endpoint: str, aws_credentials: None) -> str:
    """A fresh, uniquely named bucket on the moto S3 server (a stand-in for AWS S3 only).

    The bucket is reached over HTTP on loopback, through the same s3fs code
    path as AWS; the credentials are fake and set for this test only.
    """
    return make_bucket(s3_endpoint)


@pytest.fixture
def write_config(tmp_path: Path) -> Callable[..., Path]:
    """Write an `mlops.toml` into `tmp_path` (or `root`) and return the project folder."""

    def write(text: str = MINIMAL_CONFIG, root: Path | None = None) -> Path:
        root = root or tmp_path
        root.mkdir(parents=True, exist_ok=True)
        (root / "mlops.toml").write_text(text, encoding="utf-8")
        return root

    return write


# -- a trained project, shared read-only, and private copies of it ------------------------------

TRAINED_NAME = "iris-e2e"
_RUN_VARIABLES = ("MLOPS_ENVIRONMENT", "MLOPS_STORAGE", "MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "MLFLOW_RUN_ID")


@dataclass(frozen=True)
class TrainedProject:
    """A rendered project after one whole `mlops run`, and what that command printed."""

    root: Path
    output: str


@pytest.fixture(scope="session")
def trained_project(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TrainedProject]:
    """A rendered `iris-e2e` project whose whole pipeline ran once through `mlops run`: v1 is champion.

    Shared by every test of the session, so read it only; take `trained_copy` to change or count anything.
    At the end of the session its tracking store and data must be as they were.
    """
    from click.testing import CliRunner

    from mlops_template.cli.main import main
    from mlops_template.scaffold.new import new_project

    with pytest.MonkeyPatch.context() as mp:
        for var in _RUN_VARIABLES:
            mp.delenv(var, raising=False)
        root = new_project(TRAINED_NAME, directory=tmp_path_factory.mktemp("trained") / TRAINED_NAME, lock=False)
        result = CliRunner().invoke(main, ["run", "--project", str(root)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    before = _fingerprint(root)
    yield TrainedProject(root, result.output)
    assert _fingerprint(root) == before, "a test changed the shared trained project; give it `trained_copy` instead"


def _fingerprint(root: Path) -> dict[str, str]:
    """The sha256 of the tracking store and of every file the runs wrote."""
    files = [root / "mlruns.db", *(p for folder in ("data", "mlruns") for p in (root / folder).rglob("*"))]
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files if p.is_file()}


@pytest.fixture
def trained_copy(trained_project: TrainedProject, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """This test's own copy of the trained project, its tracking store pointing into the copy only."""
    for var in _RUN_VARIABLES:
        monkeypatch.delenv(var, raising=False)
    return copy_project(trained_project.root, tmp_path / trained_project.root.name)


def copy_project(source: Path, target: Path) -> Path:
    """Copy a project folder so that the copy reads and writes nothing of the original.

    MLflow's SQLite store keeps absolute paths (the experiment's artifact location, each run's
    artifact URI, model versions' source and storage location, logged models' locations, dataset
    sources, ...): every one naming `source` is rewritten to name `target`.
    """
    shutil.copytree(source, target, symlinks=True)
    database = target / "mlruns.db"
    if database.exists():
        relocate_paths(database, str(source), str(target))
    return target


def relocate_paths(database: Path, old: str, new: str) -> int:
    """Replace `old` by `new` in every text value of every table of a SQLite file; returns the values changed."""
    changed = 0
    with closing(sqlite3.connect(database)) as connection, connection:
        tables = [row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        for table in tables:
            for column in [row[1] for row in connection.execute(f'PRAGMA table_info("{table}")')]:
                changed += connection.execute(
                    f'UPDATE "{table}" SET "{column}" = replace("{column}", ?, ?) '
                    f'WHERE typeof("{column}") = \'text\' AND instr("{column}", ?) > 0',
                    (old, new, old),
                ).rowcount
    return changed


def text_values_naming(database: Path, text: str) -> list[tuple[str, str, str]]:
    """(table, column, value) of every text value in a SQLite file that contains `text`."""
    found = []
    with closing(sqlite3.connect(database)) as connection:
        tables = [row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        for table in tables:
            for column in [row[1] for row in connection.execute(f'PRAGMA table_info("{table}")')]:
                rows = connection.execute(
                    f'SELECT "{column}" FROM "{table}" WHERE typeof("{column}") = \'text\' AND instr("{column}", ?) > 0',
                    (text,),
                )
                found += [(table, column, value) for (value,) in rows]
    return found
