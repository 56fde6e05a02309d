"""A tracking server lost in the middle of a step: the step fails within the environment's bound, in one line.

Real processes: `mlflow server` on PostgreSQL with artifacts on moto's S3
(`stack.py`), and `mlops run` as a process of its own. The server is killed
while a step is working, as a crashed or rescheduled server would be.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow import MlflowClient
from stack import _start_mlflow_server, _stop, _wait_for_health, client_env

STEPS = """\
import os
import time
from pathlib import Path

import pandas as pd

from mlops_template import Pipeline


def make(ctx):
    ctx.write("table", pd.DataFrame({"a": [1, 2, 3]}))


def train(ctx):
    signals = Path(os.environ["FAULT_SIGNALS"])
    (signals / "ready").write_text("")
    while not (signals / "go").exists():
        time.sleep(0.1)
    ctx.log_metrics({"after_the_server_went": 1.0})


pipeline = Pipeline([make, train])
"""
# Longer than the bounded retries mlops sets for a step (a few seconds each), far shorter than MLflow's own.
HELD_ON_LIMIT = 90


@pytest.fixture
def server_process(postgres, s3_endpoint, tmp_path):
    process, server = _start_mlflow_server(postgres, s3_endpoint, tmp_path)
    try:
        _wait_for_health(server.url, process, server.log)
        yield process, server
    finally:
        _stop(process)


def project(root: Path, tracking_uri: str, **dev: str) -> Path:
    (root / "src" / "faulty").mkdir(parents=True)
    (root / "src" / "faulty" / "__init__.py").write_text("")
    (root / "src" / "faulty" / "main.py").write_text(STEPS)
    extra = "".join(f"{key} = {value}\n" for key, value in dev.items())
    (root / "mlops.toml").write_text(
        '[project]\nname = "faulty"\npackage = "faulty"\n\n[model]\ngate = { min = false }\n\n'
        '[environments.local]\nstorage = "data"\ntracking_uri = "sqlite:///mlruns.db"\n\n'
        f'[environments.dev]\nstorage = "data"\ntracking_uri = "{tracking_uri}"\n{extra}'
    )
    return root


def wait_for(path: Path, process: subprocess.Popen, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while not path.exists():
        if process.poll() is not None:
            raise AssertionError(f"mlops run ended before its step started:\n{process.communicate()}")
        if time.monotonic() > deadline:
            process.kill()
            raise AssertionError(f"the step did not start within {seconds:.0f} s")
        time.sleep(0.1)


def test_a_server_killed_during_a_step_fails_it_in_one_line_and_the_next_run_ends_what_it_left(
    server_process, tmp_path, postgres, s3_endpoint
):
    process, server = server_process
    root = project(tmp_path / "project", server.url, tracking_timeout="30")
    signals = tmp_path / "signals"
    signals.mkdir()
    env = client_env(FAULT_SIGNALS=str(signals))
    run = subprocess.Popen(
        [sys.executable, "-m", "mlops_template", "run", "-e", "dev"],
        cwd=root,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    wait_for(signals / "ready", run)
    os.killpg(process.pid, signal.SIGKILL)  # the server and its workers, at once
    process.wait()
    (signals / "go").write_text("")
    try:  # a hang guard, not a speed check: MLflow's own retries would hold on for minutes
        stdout, stderr = run.communicate(timeout=HELD_ON_LIMIT)
    except subprocess.TimeoutExpired:
        run.kill()
        pytest.fail(f"the step still held on {HELD_ON_LIMIT} s after the tracking server was lost")

    assert run.returncode == 1, stdout + stderr
    assert "Traceback" not in stdout + stderr
    [line] = [line for line in stderr.splitlines() if not line.startswith("Warning: ")]
    assert line.startswith(f"Error: step 'train' failed: environment 'dev': tracking store {server.url} failed: ")
    assert "start the server or fix tracking_uri" in line

    # The server comes back; the next run in the environment ends what the lost one left RUNNING.
    restarted, _ = _start_mlflow_server(postgres, s3_endpoint, tmp_path, again=server)
    try:
        _wait_for_health(server.url, restarted, server.log)
        client = MlflowClient(server.url)
        [experiment] = [e for e in client.search_experiments() if e.name == "faulty"]
        [left] = client.search_runs([experiment.experiment_id], "tags.`mlops.step` = 'train'")
        assert left.info.status == "RUNNING"  # nobody could tell the server it failed
        again = subprocess.run(
            [sys.executable, "-m", "mlops_template", "run", "-e", "dev", "--step", "make"],
            cwd=root,
            env={**env, "MLOPS_STEP_LEASE": "1"},
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert again.returncode == 0, again.stderr
        swept = client.get_run(left.info.run_id)
        assert swept.info.status == "FAILED" and "no heartbeat for" in swept.data.tags["mlops.lost"]
        parent = client.get_run(left.data.tags["mlflow.parentRunId"])
        assert parent.info.status == "FAILED"
    finally:
        _stop(restarted)
