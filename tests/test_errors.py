"""A failing tracking store or registry ends a command with one line naming it, the problem and the fix.

The failures are real: a file that is not a database, a folder that cannot be
created, a port nobody listens on, and HTTP servers on loopback that answer
`/health` but then drop the connection or are not MLflow.
"""

from __future__ import annotations

import http.server
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from mlops_template import Pipeline, load_config
from mlops_template.cli import main
from mlops_template.runner import run_pipeline
from mlops_template.tracking import display_uri

COMMANDS = [["runs"], ["models"], ["promote", "1"]]


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for var in ("MLOPS_ENVIRONMENT", "MLOPS_STORAGE", "MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "MLFLOW_RUN_ID"):
        monkeypatch.delenv(var, raising=False)
    root = tmp_path / "project"
    root.mkdir()
    return root


def configure(root: Path, **env: str) -> None:
    lines = ["[project]", 'name = "broken"', 'package = "broken"', "", "[environments.local]", 'storage = "data"']
    lines += [f'{key} = "{value}"' for key, value in env.items()]
    (root / "mlops.toml").write_text("\n".join(lines) + "\n", encoding="utf-8")


def mlops(root: Path, *args: str):
    return CliRunner().invoke(main, [*args, "--project", str(root)])


def one_error_line(result) -> str:
    """The command failed with exit code 1 and printed exactly one line, an error, and no traceback."""
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    assert lines[0].startswith("Error: ")
    return lines[0]


def free_port() -> int:
    with socket.socket() as s:  # nothing listens on it once closed
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- the tracking store ---------------------------------------------------------------------


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_a_tracking_file_that_is_not_a_database(project, command):
    (project / "mlruns.db").write_bytes(b"\x8f not sqlite \x00" * 300)
    configure(project, tracking_uri="sqlite:///mlruns.db")
    line = one_error_line(mlops(project, *command))
    assert line == (
        f"Error: environment 'local': tracking store sqlite:///{project / 'mlruns.db'} failed: "
        "DatabaseError: file is not a database; that file is not an MLflow SQLite store: move it aside to start a "
        "new one, or fix tracking_uri in mlops.toml or MLFLOW_TRACKING_URI"
    )


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_a_tracking_folder_that_cannot_be_created(project, command):
    (project / "taken").write_text("a file where the folder should be")
    configure(project, tracking_uri="sqlite:///taken/store/mlruns.db")
    line = one_error_line(mlops(project, *command))
    assert f"tracking store sqlite:///{project / 'taken' / 'store' / 'mlruns.db'} failed: NotADirectoryError" in line
    assert line.endswith(
        "point tracking_uri in mlops.toml or MLFLOW_TRACKING_URI at a folder this user can create and write"
    )


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_a_tracking_server_nobody_runs(project, command):
    port = free_port()
    configure(project, tracking_uri=f"http://127.0.0.1:{port}")
    line = one_error_line(mlops(project, *command))
    assert f"tracking server http://127.0.0.1:{port} is unreachable" in line
    assert "Connection refused" in line and line.endswith(
        "start it or fix tracking_uri in mlops.toml / MLFLOW_TRACKING_URI"
    )


def test_a_password_in_the_tracking_uri_is_not_printed_and_not_taken_for_the_host(project):
    port = free_port()
    configure(project, tracking_uri=f"http://ml:s3cret@127.0.0.1:{port}")
    line = one_error_line(mlops(project, "runs"))
    assert "s3cret" not in line
    assert f"tracking server http://ml:***@127.0.0.1:{port} is unreachable ([Errno 111] Connection refused)" in line


class _HealthOnly(http.server.BaseHTTPRequestHandler):
    """Answers `/health`; every API call then gets `mode`: a dropped connection or a 404."""

    mode = "drop"

    def do_GET(self):
        if self.path == "/health":
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"OK")
        elif self.mode == "404":
            self.send_response(404)
            self.end_headers()
        else:
            self.close_connection = True  # no answer at all

    do_POST = do_GET

    def log_message(self, *args):
        pass


@pytest.fixture
def half_server(request) -> Iterator[str]:
    handler = type("Handler", (_HealthOnly,), {"mode": request.param})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("half_server", ["drop"], indirect=True)
@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_a_server_that_drops_the_connection_after_health(project, half_server, command, monkeypatch):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # MLflow would retry for minutes
    configure(project, tracking_uri=half_server)
    line = one_error_line(mlops(project, *command))
    assert f"tracking store {half_server} failed: the connection failed (" in line
    assert line.endswith("start the server or fix tracking_uri in mlops.toml or MLFLOW_TRACKING_URI")


@pytest.mark.parametrize("half_server", ["404"], indirect=True)
def test_a_server_that_is_not_mlflow(project, half_server):
    configure(project, tracking_uri=half_server)
    line = one_error_line(mlops(project, "runs"))
    assert f"tracking store {half_server} failed: MlflowException: API request to endpoint" in line
    assert "404 != 200" in line
    assert line.endswith(
        "check that the server is an MLflow tracking server and its URL is right "
        "(tracking_uri in mlops.toml or MLFLOW_TRACKING_URI)"
    )


# -- the model registry, when it is a store of its own ---------------------------------------


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_a_registry_file_that_is_not_a_database(project, shared_db, command):
    (project / "registry.db").write_bytes(b"\x8f not sqlite \x00" * 300)
    configure(project, tracking_uri=shared_db, registry_uri="sqlite:///registry.db")
    if command == ["runs"]:  # so that listing runs reaches the registry for their model versions
        run_pipeline(Pipeline([_noop]), load_config(project))
    line = one_error_line(mlops(project, *command))
    assert line == (
        f"Error: environment 'local': model registry sqlite:///{project / 'registry.db'} failed: "
        "DatabaseError: file is not a database; that file is not an MLflow SQLite store: move it aside to start a "
        "new one, or fix registry_uri in mlops.toml or MLFLOW_REGISTRY_URI"
    )


def _noop(ctx):
    pass


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_a_registry_server_nobody_runs(project, shared_db, command):
    port = free_port()
    configure(project, tracking_uri=shared_db, registry_uri=f"http://127.0.0.1:{port}")
    line = one_error_line(mlops(project, *command))
    assert f"model registry server http://127.0.0.1:{port} is unreachable" in line
    assert line.endswith("start it or fix registry_uri in mlops.toml / MLFLOW_REGISTRY_URI")


def test_runs_without_any_registered_model_list_the_runs(project, shared_db):
    configure(project, tracking_uri=shared_db)
    result = run_pipeline(Pipeline([_noop]), load_config(project))
    listing = mlops(project, "runs")
    assert listing.exit_code == 0, listing.output
    assert result.run_id in listing.output


@pytest.mark.parametrize(
    ("uri", "shown"),
    [
        ("http://ml:s3cret@mlflow.internal:5000", "http://ml:***@mlflow.internal:5000"),
        ("postgresql://ml:s3cret@db/mlflow", "postgresql://ml:***@db/mlflow"),
        ("sqlite:////tmp/mlruns.db", "sqlite:////tmp/mlruns.db"),
        ("http://mlflow.internal:5000", "http://mlflow.internal:5000"),
    ],
)
def test_display_uri_hides_passwords(uri, shown):
    assert display_uri(uri) == shown
