"""A store that cannot be used ends `mlops run` before any run is recorded, with one line.

How fast it gives up is measured by `benchmarks/fail_fast.py`, not here.

Each case is a real failure, met by `mlops run` in a process of its own: a
port nobody listens on, HTTP servers on loopback that are not MLflow or not
S3, a bucket that does not exist and a moto server that checks keys (its IAM
mode) refusing made-up ones. The line names the environment, the store (its
URI without secrets) and the fix; the tracking store (SQLite) holds no new run.
"""

from __future__ import annotations

import http.server
import os
import socket
import sqlite3
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import closing
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import moto_server, store_client
from stack import PASSWORD_ROLE, PASSWORD_ROLE_PASSWORD

from mlops_template.cli.main import main
from mlops_template.config.load import load_config

MLOPS = str(Path(sys.executable).parent / "mlops")

STEP = """\
import pandas as pd
from mlops_template import Pipeline


def make(ctx):
    ctx.write("table", pd.DataFrame({"a": [1, 2, 3]}))


pipeline = Pipeline([make])
"""


def free_port() -> int:
    with socket.socket() as s:  # nothing listens on it once closed
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One SQLite tracking store for the module, its tables made, so that counting its runs means something."""
    uri = f"sqlite:///{tmp_path_factory.mktemp('fail-fast') / 'mlruns.db'}"
    store_client(uri).search_experiments()
    return uri


def count_runs(uri: str) -> int:
    with closing(sqlite3.connect(uri.removeprefix("sqlite:///"))) as db:
        return db.execute("SELECT count(*) FROM runs").fetchone()[0]


@pytest.fixture
def project(tmp_path: Path, store: str) -> Callable[..., Path]:
    """A project with one step that writes a table, and an environment `dev` with the given keys."""

    def make(**dev: str) -> Path:
        root = tmp_path / "project"
        package = f"demo_{uuid.uuid4().hex[:8]}"  # its own name: a run in this process imports it
        (root / "src" / package).mkdir(parents=True)
        (root / "src" / package / "__init__.py").write_text("")
        (root / "src" / package / "main.py").write_text(STEP)
        lines = [
            f'[project]\nname = "{package}"\npackage = "{package}"\n',
            "[model]\ngate = { min = false }\n",
            f'[environments.local]\nstorage = "data"\ntracking_uri = "{store}"\n',
            "[environments.dev]",
            *(f'{key} = "{value}"' for key, value in {"storage": "data", "tracking_uri": store, **dev}.items()),
        ]
        (root / "mlops.toml").write_text("\n".join(lines) + "\n")
        return root

    return make


def mlops_run(root: Path, **variables: str) -> subprocess.CompletedProcess:
    """`mlops run -e dev` with no AWS credentials but `variables`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "MLFLOW_", "MLOPS_"))}
    env |= {
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "NO_PROXY": "127.0.0.1,localhost",
        "no_proxy": "127.0.0.1,localhost",
        "AWS_CONFIG_FILE": str(root / "no-aws-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(root / "no-aws-credentials"),
        "AWS_EC2_METADATA_DISABLED": "true",
        **variables,
    }
    return subprocess.run(
        [MLOPS, "run", "-e", "dev", "--project", str(root)], env=env, capture_output=True, text=True, timeout=120
    )


def one_line_failure(result: subprocess.CompletedProcess) -> str:
    """The command failed with one error line naming the environment, nothing else, and no traceback."""
    assert result.returncode != 0, result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("Error: environment 'dev': ")
    return lines[0]


S3_KEYS = {
    "AWS_ACCESS_KEY_ID": "made-up-key",
    "AWS_SECRET_ACCESS_KEY": "made-up-secret",
    "AWS_DEFAULT_REGION": "us-east-1",
}


# -- servers on loopback that answer, but not as the store they are taken for ----------------------------


class _Answer(http.server.BaseHTTPRequestHandler):
    status, content_type, body = 404, "text/html", b"<html><body>Not here</body></html>"

    def do_GET(self):
        self.send_response(self.status)
        self.send_header("Content-Type", self.content_type)
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    do_POST = do_PUT = do_HEAD = do_GET

    def log_message(self, *args):
        pass


@pytest.fixture
def web_server(request) -> Iterator[str]:
    """An HTTP server on loopback answering every request with the (status, content type, body) given."""
    status, content_type, body = request.param
    handler = type("Handler", (_Answer,), {"status": status, "content_type": content_type, "body": body})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


NOT_FOUND = (404, "text/html", b"<html><body>Not here</body></html>")
UNAVAILABLE = (503, "text/html", b"<html><body>Service Unavailable</body></html>")
UNAUTHORIZED = (401, "application/json", b'{"error": "login"}')


# -- the tracking server --------------------------------------------------------------------------------


def test_a_tracking_server_nobody_runs(project, store):
    port = free_port()
    root = project(tracking_uri=f"https://ml:t0ken-s3cret@127.0.0.1:{port}")
    line = one_line_failure(mlops_run(root))
    assert "t0ken-s3cret" not in line
    assert f"tracking server https://ml:***@127.0.0.1:{port} is unreachable (" in line
    assert line.endswith("start it or fix tracking_uri in mlops.toml / MLFLOW_TRACKING_URI")


@pytest.mark.parametrize("web_server", [UNAVAILABLE], indirect=True)
def test_a_tracking_url_that_answers_but_is_not_mlflow(project, web_server):
    """MLflow itself would retry a 503 for minutes."""
    line = one_line_failure(mlops_run(project(tracking_uri=web_server)))
    assert line == (
        f"Error: environment 'dev': tracking server {web_server} does not answer as an MLflow server "
        "(HTTP 503, text/html); point tracking_uri in mlops.toml / MLFLOW_TRACKING_URI at one"
    )


@pytest.mark.parametrize(
    ("web_server", "problem"),
    [
        (NOT_FOUND, "does not answer as an MLflow server (HTTP 404, text/html); point tracking_uri"),
        (UNAUTHORIZED, "refused the credentials (HTTP 401); set MLFLOW_TRACKING_USERNAME"),
    ],
    indirect=["web_server"],
)
def test_other_answers_of_a_tracking_url_fail_as_fast_in_process(project, web_server, problem):
    root = project(tracking_uri=web_server)
    result = CliRunner().invoke(main, ["runs", "-e", "dev", "--project", str(root)])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert result.output.startswith(f"Error: environment 'dev': tracking server {web_server} {problem}")


def test_a_database_nobody_runs_fails_without_the_drivers_retries(project):
    """MLflow's own engine retries a database that refuses connections for minutes."""
    port = free_port()
    root = project(tracking_uri=f"postgresql+psycopg2://ml:db-s3cret@127.0.0.1:{port}/mlflow")
    result = CliRunner().invoke(main, ["runs", "-e", "dev", "--project", str(root)])
    assert result.exit_code == 1 and "Traceback" not in result.output and "db-s3cret" not in result.output
    assert result.output.startswith(
        f"Error: environment 'dev': tracking store postgresql+psycopg2://ml:***@127.0.0.1:{port}/mlflow "
        "is unreachable ("
    )
    assert "start the database or fix tracking_uri in mlops.toml / MLFLOW_TRACKING_URI" in result.output


def test_a_postgresql_uri_as_users_write_it_tracks_with_the_installed_driver(project, postgres):
    database = postgres.create_database()
    root = project(tracking_uri=database.replace("postgresql+psycopg2://", "postgresql://"))
    result = mlops_run(root)
    assert result.returncode == 0, result.stderr
    client = store_client(database)
    experiment = client.get_experiment_by_name(load_config(root).name)
    assert {r.info.status for r in client.search_runs([experiment.experiment_id])} == {"FINISHED"}


def test_a_database_login_without_its_password_fails_in_one_line_without_the_engine_retries(project, postgres):
    """MLflow retries creating its engine for about 100 s whatever the reason; the login is tried once first."""
    database = postgres.create_database(owner=PASSWORD_ROLE)
    root = project(tracking_uri=database)
    line = one_line_failure(mlops_run(root))
    assert f"tracking store {database} refused the login (OperationalError: " in line
    assert "give the user's password in the URI through MLFLOW_TRACKING_URI" in line

    wrong = database.replace(f"{PASSWORD_ROLE}@", f"{PASSWORD_ROLE}:not-the-pw@")
    line = one_line_failure(mlops_run(root, MLFLOW_TRACKING_URI=wrong))
    assert "not-the-pw" not in line and f"{PASSWORD_ROLE}:***@" in line

    right = database.replace(f"{PASSWORD_ROLE}@", f"{PASSWORD_ROLE}:{PASSWORD_ROLE_PASSWORD}@")
    result = mlops_run(root, MLFLOW_TRACKING_URI=right)
    assert result.returncode == 0, result.stderr
    assert PASSWORD_ROLE_PASSWORD not in result.stdout + result.stderr


def test_a_database_driver_that_is_not_installed_is_named_with_the_fix(project, postgres):
    uri = f"postgresql+pg8000://postgres@127.0.0.1:{postgres.port}/postgres"
    line = one_line_failure(mlops_run(project(tracking_uri=uri)))
    assert "needs the database driver 'pg8000', which is not installed; pip install pg8000" in line
    assert "write postgresql://" in line


# -- the storage ----------------------------------------------------------------------------------------


def test_a_bucket_that_does_not_exist(project, store, s3_endpoint):
    before = count_runs(store)
    bucket = f"missing-{uuid.uuid4().hex[:8]}"
    root = project(storage=f"s3://{bucket}/demo", s3_endpoint_url=s3_endpoint)
    line = one_line_failure(mlops_run(root, **S3_KEYS))
    assert line == (
        f"Error: environment 'dev': storage s3://{bucket}/demo: bucket '{bucket}' does not exist at the S3 endpoint "
        f"{s3_endpoint}; create it (aws s3 mb s3://{bucket}) or fix storage in mlops.toml / MLOPS_STORAGE"
    )
    assert count_runs(store) == before


def test_a_bucket_that_exists_runs_and_is_recorded(project, store, s3_endpoint, s3_bucket):
    """The same project and store with the bucket there: the probe lets it through and the run is counted."""
    before = count_runs(store)
    root = project(storage=f"s3://{s3_bucket}/demo", s3_endpoint_url=s3_endpoint)
    result = mlops_run(root, **S3_KEYS)
    assert result.returncode == 0, result.stderr
    assert count_runs(store) == before + 2  # the pipeline run and its step


@pytest.fixture(scope="module")
def iam_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A moto server that checks every request's keys against its IAM users (it has none)."""
    with moto_server(tmp_path_factory.mktemp("moto-iam"), INITIAL_NO_AUTH_ACTION_COUNT="0") as url:
        yield url


def test_credentials_the_store_refuses(project, store, iam_endpoint):
    before = count_runs(store)
    root = project(storage="s3://any-bucket/demo", s3_endpoint_url=iam_endpoint)
    line = one_line_failure(mlops_run(root, **S3_KEYS))
    assert line == (
        f"Error: environment 'dev': storage s3://any-bucket/demo: access denied by the S3 endpoint {iam_endpoint} "
        "(InvalidAccessKeyId); fix the AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY in use, or set aws_profile in "
        "mlops.toml"
    )
    assert "made-up-secret" not in line
    assert count_runs(store) == before


def test_no_credentials_at_all(project, store, s3_endpoint):
    before = count_runs(store)
    root = project(storage="s3://any-bucket/demo", s3_endpoint_url=s3_endpoint)
    line = one_line_failure(mlops_run(root))
    assert "storage s3://any-bucket/demo: no AWS credentials found" in line
    assert line.endswith("fix the AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY in use, or set aws_profile in mlops.toml")
    assert count_runs(store) == before


def test_an_s3_endpoint_nobody_listens_on(project, store):
    before = count_runs(store)
    endpoint = f"http://127.0.0.1:{free_port()}"
    root = project(storage="s3://any-bucket/demo", s3_endpoint_url=endpoint)
    line = one_line_failure(mlops_run(root, **S3_KEYS))
    assert f"storage s3://any-bucket/demo: cannot reach the S3 endpoint {endpoint} (" in line
    assert "Connection refused" in line
    assert line.endswith("start it or fix s3_endpoint_url in mlops.toml / AWS_ENDPOINT_URL_S3")
    assert count_runs(store) == before


@pytest.mark.parametrize("web_server", [NOT_FOUND], indirect=True)
def test_an_s3_endpoint_that_is_not_s3(project, store, web_server):
    before = count_runs(store)
    root = project(storage="s3://any-bucket/demo", s3_endpoint_url=web_server)
    line = one_line_failure(mlops_run(root, **S3_KEYS))
    assert line == (
        f"Error: environment 'dev': storage s3://any-bucket/demo: {web_server} does not answer as S3 (HTTP 404); "
        "fix s3_endpoint_url in mlops.toml / AWS_ENDPOINT_URL_S3"
    )
    assert count_runs(store) == before


def test_data_add_to_a_bucket_that_does_not_exist(project, s3_endpoint, aws_credentials, tmp_path):
    bucket = f"missing-{uuid.uuid4().hex[:8]}"
    root = project(storage=f"s3://{bucket}/demo", s3_endpoint_url=s3_endpoint)
    (tmp_path / "rows.csv").write_text("a,b\n1,2\n")
    result = CliRunner().invoke(
        main, ["data", "add", str(tmp_path / "rows.csv"), "--name", "rows", "-e", "dev", "--project", str(root)]
    )
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert result.output.strip() == (
        f"Error: environment 'dev': storage s3://{bucket}/demo: bucket '{bucket}' does not exist at the S3 endpoint "
        f"{s3_endpoint}; create it (aws s3 mb s3://{bucket}) or fix storage in mlops.toml / MLOPS_STORAGE"
    )


def test_a_local_storage_folder_that_cannot_be_made(project, store, tmp_path):
    before = count_runs(store)
    (tmp_path / "taken").write_text("a file where the storage folder should be")
    root = project(storage=str(tmp_path / "taken" / "data"))
    result = CliRunner().invoke(main, ["run", "-e", "dev", "--project", str(root)])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert result.output.strip() == (
        f"Error: environment 'dev': storage {tmp_path / 'taken' / 'data'}: cannot be written (Not a directory); "
        "point storage in mlops.toml / MLOPS_STORAGE at a folder this user can create and write"
    )
    assert count_runs(store) == before
