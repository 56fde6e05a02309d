"""`mlops ui` as a real process on loopback, for the tests that look at it over HTTP or in a browser."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

START_TIMEOUT = 120.0  # a loaded machine takes a minute to start MLflow's server and its job workers
LOOPBACK = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never through a proxy


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def get(url: str) -> tuple[int, bytes]:
    """The status and body of a GET on loopback; an HTTP error status is returned, not raised."""
    try:
        with LOOPBACK.open(url, timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def wait_for_health(base: str, process: subprocess.Popen, log: Path) -> None:
    """Return once `base`/health answers 200; fail with the log's tail if the process exits or time runs out."""
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"`mlops ui` exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if get(f"{base}/health")[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.25)
    raise AssertionError(
        f"`mlops ui` did not answer on {base}/health within {START_TIMEOUT:.0f}s:\n{log.read_text()[-3000:]}"
    )


def stop(process: subprocess.Popen) -> None:
    """Stop `mlops ui` and the server processes it started (its own process group)."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    try:  # uvicorn workers may outlive the parent for a moment
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


@contextmanager
def running_ui(project: Path, log: Path) -> Iterator[tuple[str, int]]:
    """`mlops ui --port P --project DIR`, started as a user would; yields its base URL and port, then stops it.

    The store is named by MLFLOW_TRACKING_URI, as a user would give it; the output goes to `log`.
    """
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "MLOPS_"))}
    env["MLFLOW_DISABLE_TELEMETRY"] = "true"
    env["MLFLOW_TRACKING_URI"] = f"sqlite:///{project / 'mlruns.db'}"  # the project's own store
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    mlops = Path(sys.executable).parent / "mlops"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [str(mlops), "ui", "--port", str(port), "--project", str(project)],
            cwd=project.parent,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        base = f"http://127.0.0.1:{port}"
        wait_for_health(base, process, log)
        yield base, port
    finally:
        stop(process)
