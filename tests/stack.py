"""A team's stack on loopback: PostgreSQL, and `mlflow server` over it with artifacts proxied to S3 (moto).

`postgres` is one PostgreSQL server per session, initialised into a temporary
folder; each test or module that needs a fresh store asks it for a database of
its own. PostgreSQL refuses to run as root, so as root its folder belongs to an
unprivileged user (`nobody`, or a system user made for it) and its programs run
through `runuser`; any other user runs them as themself.

`mlflow_server` is one tracking server per test module, started as a team would
start theirs: PostgreSQL backend store, `--artifacts-destination s3://…` on the
moto server, logs in a file. Its default security middleware admits clients on
127.0.0.1, so no `--allowed-hosts` is needed.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import AWS_OVERRIDES, FAKE_AWS, make_bucket

PASSWORD_ROLE, PASSWORD_ROLE_PASSWORD = "ml_team", "team-pw-4821"  # a role that logs in by password only
_SUPERUSER = "postgres"  # the database role initdb creates; loopback only, trusted
_SERVICE_USER = "mlops-postgres"  # made only when running as root on a system without `nobody`
_MLFLOW_START_TIMEOUT = 180.0  # two imports of MLflow's server on a busy machine
# Variables that would send the server's or a command's MLflow elsewhere.
MLFLOW_OVERRIDES = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def postgres_bindir() -> Path | None:
    """The folder holding `initdb` and `pg_ctl`: from PATH, `pg_config --bindir`, or /usr/lib/postgresql/<newest>/bin."""
    candidates = []
    if initdb := shutil.which("initdb"):
        candidates.append(Path(initdb).resolve().parent)
    if pg_config := shutil.which("pg_config"):
        out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, check=False)
        candidates.append(Path(out.stdout.strip()))
    versions = glob.glob("/usr/lib/postgresql/*/bin")
    newest_first = sorted(
        versions, key=lambda p: [int(n) for n in re.findall(r"\d+", Path(p).parent.name)], reverse=True
    )
    candidates += [Path(p) for p in newest_first]
    return next((c for c in candidates if (c / "initdb").is_file() and (c / "pg_ctl").is_file()), None)


def _service_user() -> str:
    """The unprivileged user PostgreSQL runs as when the tests run as root."""
    for name in ("nobody", _SERVICE_USER):
        try:
            pwd.getpwnam(name)
            return name
        except KeyError:
            continue
    subprocess.run(
        ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", _SERVICE_USER], check=True
    )
    return _SERVICE_USER


@dataclass
class Postgres:
    """A running PostgreSQL server on 127.0.0.1 that makes a fresh database on request."""

    port: int

    def create_database(self, owner: str = _SUPERUSER) -> str:
        """A new, empty database; returns its SQLAlchemy URI (as `mlflow server --backend-store-uri` takes it)."""
        name = f"mlflow_{uuid.uuid4().hex[:12]}"
        self.execute(f'CREATE DATABASE "{name}" OWNER {owner}')
        return f"postgresql+psycopg2://{owner}@127.0.0.1:{self.port}/{name}"

    def execute(self, statement: str) -> None:
        """Run one statement as the superuser, outside a transaction (CREATE DATABASE cannot run in one)."""
        import psycopg2

        connection = psycopg2.connect(host="127.0.0.1", port=self.port, user=_SUPERUSER, dbname="postgres")
        try:
            connection.autocommit = True
            with connection.cursor() as cursor:
                cursor.execute(statement)
        finally:
            connection.close()


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    """A PostgreSQL server for the session: `initdb` into a temporary folder, `pg_ctl start`, stopped at the end."""
    bindir = postgres_bindir()
    if bindir is None:
        pytest.fail(
            "PostgreSQL is not installed (no initdb): scripts/test.sh installs it, or apt-get install postgresql"
        )
    prefix: list[str] = []
    # Not under pytest's temp folder: it is 0700 root's, and the server's user must reach its own folder.
    folder = Path(tempfile.mkdtemp(prefix="mlops-postgres-"))
    if os.geteuid() == 0:
        if shutil.which("runuser") is None:
            pytest.fail("running as root without `runuser`: PostgreSQL cannot be started as another user")
        user = _service_user()
        shutil.chown(folder, user)
        prefix = ["runuser", "-u", user, "--"]
    data, log, port = folder / "data", folder / "server.log", free_port()

    def run(*command: str) -> None:
        done = subprocess.run([*prefix, *command], capture_output=True, text=True, timeout=120, check=False)
        if done.returncode != 0:
            server_log = log.read_text(errors="replace") if log.exists() else ""
            raise RuntimeError(f"{' '.join(command)} failed:\n{done.stdout}{done.stderr}{server_log}")

    # Throwaway data: no fsync; sockets in its own folder, as the default one may not be writable.
    options = f"-h 127.0.0.1 -p {port} -k {folder} -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
    try:
        run(str(bindir / "initdb"), "-D", str(data), "-U", _SUPERUSER, "-A", "trust", "-E", "UTF8", "--no-sync")
        # One role that must give a password, as a team's database asks: the first matching line of pg_hba decides.
        hba = data / "pg_hba.conf"
        hba.write_text(f"host all {PASSWORD_ROLE} 127.0.0.1/32 scram-sha-256\n" + hba.read_text())
        run(str(bindir / "pg_ctl"), "-D", str(data), "-l", str(log), "-o", options, "-w", "-t", "60", "start")
        try:
            server = Postgres(port)
            server.execute(f"CREATE ROLE {PASSWORD_ROLE} LOGIN PASSWORD '{PASSWORD_ROLE_PASSWORD}' CREATEDB")
            yield server
        finally:
            run(str(bindir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@dataclass(frozen=True)
class MlflowServer:
    """A running `mlflow server`: its URL, the bucket its artifacts go to (under `mlartifacts/`), and its log."""

    url: str
    bucket: str
    s3_endpoint: str
    backend_store_uri: str
    log: Path


def client_env(**extra: str) -> dict[str, str]:
    """This process's environment with the fake AWS keys, and no variable redirecting MLflow, mlops or AWS."""
    env = {k: v for k, v in os.environ.items() if k not in (*AWS_OVERRIDES, *MLFLOW_OVERRIDES)}
    env = {k: v for k, v in env.items() if not k.startswith(("MLOPS_", "MLFLOW_S3_"))}
    return {**env, **FAKE_AWS, "MLFLOW_DISABLE_TELEMETRY": "true", **extra}


@pytest.fixture(scope="module")
def mlflow_server(
    postgres: Postgres, s3_endpoint: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[MlflowServer]:
    """`mlflow server` on 127.0.0.1 for one test module: a fresh PostgreSQL database, artifacts proxied to a fresh bucket."""
    with running_mlflow_server(postgres, s3_endpoint, tmp_path_factory.mktemp("mlflow-server")) as server:
        yield server


@contextlib.contextmanager
def running_mlflow_server(postgres: Postgres, s3_endpoint: str, folder: Path) -> Iterator[MlflowServer]:
    """Start `mlflow server` over a fresh database of `postgres` and a fresh bucket; stopped on exit.

    `folder` is its working folder (anything it writes stays there) and holds its log.
    """
    with running_mlflow_servers(postgres, s3_endpoint, folder) as (server,):
        yield server


@contextlib.contextmanager
def running_mlflow_servers(postgres: Postgres, s3_endpoint: str, *folders: Path) -> Iterator[tuple[MlflowServer, ...]]:
    """One `mlflow server` per folder, each over a fresh database and bucket, all started before any is waited for.

    Job execution (MLflow's background workers, unused here) is off, to spare the machine five processes.
    """
    started: list[tuple[subprocess.Popen, MlflowServer]] = []
    try:
        for folder in folders:
            started.append(_start_mlflow_server(postgres, s3_endpoint, folder))
        for process, server in started:
            _wait_for_health(server.url, process, server.log)
        yield tuple(server for _, server in started)
    finally:
        for process, _ in started:
            _stop(process)


def _start_mlflow_server(
    postgres: Postgres, s3_endpoint: str, folder: Path, *, again: MlflowServer | None = None
) -> tuple[subprocess.Popen, MlflowServer]:
    """Start a server over a fresh database and bucket, or `again` over the same ones and at the same address."""
    if again is None:
        bucket, backend, port = make_bucket(s3_endpoint), postgres.create_database(), free_port()
    else:
        bucket, backend, port = again.bucket, again.backend_store_uri, int(again.url.rsplit(":", 1)[1])
    log = folder / ("server-again.log" if again else "server.log")
    env = client_env(MLFLOW_S3_ENDPOINT_URL=s3_endpoint, MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false")
    command = [
        sys.executable, "-m", "mlflow", "server",
        "--backend-store-uri", backend,
        "--artifacts-destination", f"s3://{bucket}/mlartifacts",
        "--host", "127.0.0.1", "--port", str(port),
        "--workers", "1",
    ]  # fmt: skip
    with open(log, "wb") as out:
        # Its own process group: `mlflow server` runs uvicorn as a child, and both must stop.
        process = subprocess.Popen(
            command, cwd=folder, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    return process, MlflowServer(f"http://127.0.0.1:{port}", bucket, s3_endpoint, backend, log)


def _wait_for_health(url: str, process: subprocess.Popen, log: Path) -> None:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback, never a proxy
    deadline = time.monotonic() + _MLFLOW_START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(
                f"mlflow server exited with code {process.returncode}:\n{log.read_text(errors='replace')}"
            )
        try:
            with opener.open(f"{url}/health", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:  # refused while starting; urllib's HTTPError is an OSError too
            pass
        time.sleep(0.3)
    _stop(process)
    raise RuntimeError(
        f"mlflow server did not answer {url}/health within {_MLFLOW_START_TIMEOUT:.0f}s:\n{log.read_text()}"
    )


def _stop(process: subprocess.Popen) -> None:
    """Stop the server and its uvicorn child: its whole process group, which it leads."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=20)
    with contextlib.suppress(ProcessLookupError):  # whatever of the group is still there
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()
