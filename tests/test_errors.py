"""A failing tracking store or registry ends a command with one line naming it, the problem and the fix.

The failures are real: a file that is not a database, a folder that cannot be
created, a port nobody listens on, and HTTP servers on loopback that answer
`/health` but then drop the connection or are not MLflow.
"""

from __future__ import annotations

import http.server
import os
import pwd
import shutil
import socket
import subprocess
import sys
import sysconfig
import tempfile
import threading
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

import mlops_template
from mlops_template import Pipeline, load_config
from mlops_template.cli.main import main
from mlops_template.errors import StepError
from mlops_template.pipeline.runner import run_pipeline
from mlops_template.tracking.connect import display_uri

COMMANDS = [["runs"], ["models"], ["promote", "1"]]


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for var in ("MLOPS_ENVIRONMENT", "MLOPS_STORAGE", "MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "MLFLOW_RUN_ID"):
        monkeypatch.delenv(var, raising=False)
    root = tmp_path / "project"
    root.mkdir()
    return root


def configure(root: Path, **env: str) -> None:
    lines = ["[project]", 'name = "broken"', 'package = "broken"', "", "[model]", "gate = { min = false }", ""]
    lines += ["[environments.local]", 'storage = "data"']
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
    assert line == (
        f"Error: environment 'local': tracking server {half_server} does not answer as an MLflow server "
        "(HTTP 404, no content type); point tracking_uri in mlops.toml / MLFLOW_TRACKING_URI at one"
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


# -- a failed step's traceback ---------------------------------------------------------------


def explode(ctx):
    raise RuntimeError("boom")


def log_path(message: str) -> Path:
    return Path(message.split("(full log: ")[1].split(")")[0].split("; ")[0])


@pytest.fixture
def temp_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """`tempfile.gettempdir()` for this test: a folder of its own."""
    folder = tmp_path / "tmp"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return folder


def test_the_traceback_goes_to_the_temp_folder_when_the_project_cannot_hold_it(tiny_project, temp_dir):
    (tiny_project / ".mlops").write_text("a file where the logs folder should be")
    with pytest.raises(StepError) as excinfo:
        run_pipeline(Pipeline([explode]), load_config(tiny_project))
    message = str(excinfo.value)
    assert message.startswith("step 'explode' failed: RuntimeError: boom (full log: ")
    log = log_path(message)
    assert log.parent == temp_dir / f"mlops-logs-{os.getuid()}" and log.name.endswith("-explode.log")
    assert log.parent.stat().st_mode & 0o777 == 0o700  # other users of the machine cannot read it
    assert "Traceback" in log.read_text() and 'raise RuntimeError("boom")' in log.read_text()


def test_a_traceback_nowhere_to_be_written_still_reports_the_steps_error(tiny_project, temp_dir, monkeypatch):
    (tiny_project / ".mlops").write_text("a file where the logs folder should be")
    not_a_folder = temp_dir / "file"
    not_a_folder.write_text("")
    monkeypatch.setattr(tempfile, "tempdir", str(not_a_folder))
    with pytest.raises(StepError) as excinfo:
        run_pipeline(Pipeline([explode]), load_config(tiny_project))
    message = str(excinfo.value)
    assert message.startswith("step 'explode' failed: RuntimeError: boom (full log not saved: ")
    assert "; --verbose shows the traceback" in message
    # MLflow writes the artifact through the same temp folder, so that fails too, and is said too.
    assert "; not saved in the run: NotADirectoryError" in message
    assert isinstance(excinfo.value.__cause__, RuntimeError)


def test_a_run_artifact_that_cannot_be_saved_does_not_hide_the_steps_error(tiny_project, shared_db):
    def clobber_then_explode(ctx):
        # Injected failure: the step puts a file where its run's artifact folder goes.
        import mlflow

        artifacts = Path(urllib.parse.urlparse(mlflow.get_artifact_uri()).path)
        shutil.rmtree(artifacts, ignore_errors=True)
        artifacts.parent.mkdir(parents=True, exist_ok=True)
        artifacts.write_text("not a folder")
        raise RuntimeError("boom")

    with pytest.raises(StepError) as excinfo:
        run_pipeline(Pipeline([clobber_then_explode]), load_config(tiny_project))
    message = str(excinfo.value)
    assert message.startswith("step 'clobber_then_explode' failed: RuntimeError: boom (full log: ")
    assert "; not saved in the run: " in message
    assert 'raise RuntimeError("boom")' in log_path(message).read_text()


# -- a read-only project, as in a pod running a read-only image ------------------------------


def _read_only_prefix(root: Path) -> list[str]:
    """The command prefix under which `root` cannot be written, as in a pod whose image is read-only.

    Root ignores file modes but not a read-only mount: as root, the run gets a mount namespace of its
    own in which the project is bound read-only (wherever the checkout lives, even under a 0700
    folder). Without `unshare` it runs as `nobody` through `runuser`; any other user is already
    bound by the fixture's file modes.
    """
    if os.geteuid() != 0:
        return []
    unshare = shutil.which("unshare")
    if unshare and subprocess.run([unshare, "--mount", "true"], capture_output=True).returncode == 0:
        bind = 'mount --bind -o ro "$0" "$0" && exec "$@"'
        return [unshare, "--mount", "sh", "-c", bind, str(root)]
    runuser = shutil.which("runuser")
    if runuser is None:
        pytest.skip("running as root with neither `unshare` nor `runuser`: nothing makes the project read-only")
    try:
        pwd.getpwnam("nobody")
    except KeyError:
        pytest.skip("running as root and there is no user `nobody` to run as")
    return [runuser, "-u", "nobody", "--"]


def _python_for(prefix: list[str], env: dict[str, str]) -> tuple[list[str], dict[str, str]]:
    """This interpreter if the user may execute it, else the system's of the same version with our packages."""
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    packages = os.pathsep.join([str(Path(mlops_template.__file__).parents[1]), sysconfig.get_paths()["purelib"]])
    for python, extra in ((sys.executable, {}), (f"/usr/bin/python{version}", {"PYTHONPATH": packages})):
        probe = subprocess.run(
            [*prefix, python, "-c", "import mlops_template, mlflow"], env=env | extra, capture_output=True, timeout=120
        )
        if probe.returncode == 0:
            return [python], extra
    pytest.skip(f"no Python {version} with this environment's packages that the unprivileged user can run")


@pytest.fixture
def read_only_project() -> Iterator[tuple[Path, Path]]:
    """A project package owned by root (or read-only), and a folder the unprivileged user can write."""
    base = Path(tempfile.mkdtemp(prefix="mlops-readonly-"))  # not under pytest's 0700 folder: others must read it
    base.chmod(0o755)
    root = base / "project"
    package = root / "src" / "pod_pipeline"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "main.py").write_text(
        "from mlops_template import Pipeline\n\n\n"
        "def explode(ctx):\n"
        '    raise RuntimeError("boom in a read-only pod")\n\n\n'
        "pipeline = Pipeline([explode])\n"
    )
    (root / "mlops.toml").write_text(
        '[project]\nname = "pod"\npackage = "pod_pipeline"\n\n[model]\ngate = { min = false }\n\n'
        '[environments.local]\nstorage = "data"\ntracking_uri = "sqlite:///mlruns.db"\n'
    )
    writable = base / "writable"
    (writable / "tmp").mkdir(parents=True)
    if os.geteuid() == 0:
        nobody = pwd.getpwnam("nobody")
        for folder in (writable, writable / "tmp"):
            os.chown(folder, nobody.pw_uid, nobody.pw_gid)
    else:
        for folder in (root, *root.rglob("*")):
            if folder.is_dir():
                folder.chmod(0o555)
    try:
        yield root, writable
    finally:
        for folder in (root, *root.rglob("*")):
            if folder.is_dir():
                folder.chmod(0o755)
        shutil.rmtree(base)


def test_a_failing_step_in_a_read_only_project_logs_its_traceback_under_the_temp_folder(read_only_project):
    root, writable = read_only_project
    prefix = _read_only_prefix(root)
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(writable),
        "TMPDIR": str(writable / "tmp"),
        "MLOPS_STORAGE": str(writable / "storage"),
        "MLFLOW_TRACKING_URI": f"sqlite:///{writable / 'mlruns.db'}",
        "MLFLOW_DISABLE_TELEMETRY": "true",
    }
    python, extra = _python_for(prefix, env)
    assert not os.access(root, os.W_OK) or prefix, "the project must not be writable for the user that runs it"

    result = subprocess.run(
        [*prefix, *python, "-m", "mlops_template", "run", "--project", str(root)],
        cwd=root,
        env=env | extra,
        capture_output=True,
        text=True,
        timeout=300,
    )

    assert result.returncode == 1, result.stdout + result.stderr
    output = result.stdout + result.stderr
    assert "Traceback" not in output
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, result.stderr
    assert errors[0].startswith("Error: step 'explode' failed: RuntimeError: boom in a read-only pod (full log: ")
    log = log_path(errors[0])
    assert log.parent.parent == writable / "tmp" and log.name.endswith("-explode.log")
    assert log.parent.name.startswith("mlops-logs-") and log.parent.stat().st_mode & 0o777 == 0o700
    assert 'raise RuntimeError("boom in a read-only pod")' in log.read_text()
    assert not (root / ".mlops").exists()


# -- a project folder that cannot be written -------------------------------------------------


def test_new_into_a_folder_that_cannot_be_created_is_one_line(tmp_path):
    (tmp_path / "taken").write_text("a file where the folder should be")
    target = tmp_path / "taken" / "churn"
    line = one_error_line(CliRunner().invoke(main, ["new", "churn", "--directory", str(target)]))
    assert line.startswith(f"Error: cannot write the project into {target} (")
    assert line.endswith("; choose a folder you can write with --directory")


# -- a table for a step the pipeline does not have -----------------------------------------------


def test_a_steps_table_for_a_step_the_pipeline_lacks_is_refused_before_anything_runs(tmp_path, monkeypatch):
    for var in ("MLOPS_ENVIRONMENT", "MLOPS_STORAGE", "MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "MLFLOW_RUN_ID"):
        monkeypatch.delenv(var, raising=False)
    root = tmp_path / "project"
    package = root / "src" / "typo_pipeline"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "main.py").write_text(
        "from pathlib import Path\n\n"
        "from mlops_template import Pipeline\n\n\n"
        "def make_data(ctx):\n"
        f"    Path({str(root / 'ran')!r}).write_text('ran')\n\n\n"
        "pipeline = Pipeline([make_data])\n"
    )
    (root / "mlops.toml").write_text(
        '[project]\nname = "typo"\npackage = "typo_pipeline"\n\n[model]\ngate = { min = false }\n\n'
        '[environments.local]\nstorage = "data"\ntracking_uri = "sqlite:///mlruns.db"\n\n'
        "[steps.make_dta.params]\nrows = 4\n"
    )
    line = one_error_line(mlops(root, "run"))
    assert "[steps.make_dta] names no step of the pipeline; did you mean 'make_data'?" in line
    assert "rename or remove the table" in line
    assert not (root / "ran").exists() and not (root / "mlruns.db").exists()
