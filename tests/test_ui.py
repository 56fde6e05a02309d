"""`mlops ui`: MLflow's UI as a real process on loopback, serving the environment's tracking store."""

from __future__ import annotations

import json
import subprocess
import urllib.request
from dataclasses import replace
from pathlib import Path

import pytest
from conftest import TRAINED_NAME, copy_project
from ui_process import LOOPBACK, get, running_ui

from mlops_template import load_config
from mlops_template.tracking.ui import serve, ui_command


def _listening_addresses(port: int) -> set[str]:
    """Local IPv4/IPv6 addresses with a LISTEN socket on `port`, read from /proc/net (Linux)."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            local, state = line.split()[1], line.split()[3]
            address, hex_port = local.split(":")
            if state == "0A" and int(hex_port, 16) == port:
                found.add(address)
    return found


@pytest.fixture(scope="module")
def project(trained_project, tmp_path_factory) -> Path:
    """This module's copy of the trained project, whose store holds one pipeline run of four steps."""
    return copy_project(trained_project.root, tmp_path_factory.mktemp("ui") / TRAINED_NAME)


@pytest.fixture(scope="module")
def ui_server(project, tmp_path_factory):
    """`mlops ui --port P --project DIR`, started as a user would, stopped after the module."""
    log = tmp_path_factory.mktemp("ui-log") / "ui.log"
    with running_ui(project, log) as (base, port):
        yield base, port, log


def test_ui_serves_the_environments_store(ui_server):
    base, _, log = ui_server
    status, body = get(f"{base}/api/2.0/mlflow/experiments/get-by-name?experiment_name={TRAINED_NAME}")
    assert status == 200, body
    experiment = json.loads(body)["experiment"]
    assert experiment["name"] == TRAINED_NAME
    assert experiment["lifecycle_stage"] == "active"

    status, body = get(f"{base}/api/2.0/mlflow/experiments/get-by-name?experiment_name=not-there")
    assert status == 404 and b"RESOURCE_DOES_NOT_EXIST" in body
    assert f"MLflow UI for {TRAINED_NAME} (local): {base}" in log.read_text()


def test_ui_shows_the_runs_of_the_store(ui_server, project):
    base, _, _ = ui_server
    status, body = get(f"{base}/api/2.0/mlflow/experiments/get-by-name?experiment_name={TRAINED_NAME}")
    experiment_id = json.loads(body)["experiment"]["experiment_id"]
    request = urllib.request.Request(
        f"{base}/api/2.0/mlflow/runs/search",
        data=json.dumps({"experiment_ids": [experiment_id]}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with LOOPBACK.open(request, timeout=10) as response:
        runs = json.loads(response.read())["runs"]
    steps = sorted(t["value"] for r in runs for t in r["data"].get("tags", []) if t["key"] == "mlops.step")
    assert steps == ["feat_data", "make_data", "predict", "train_model"]
    assert len(runs) == 5  # the pipeline run and its four steps


def test_ui_listens_on_loopback_only(ui_server, project):
    _, port, _ = ui_server
    cmd = ui_command(load_config(project).environment("local"), port=port).argv
    assert cmd[cmd.index("--host") + 1] == "127.0.0.1"
    assert cmd[cmd.index("--port") + 1] == str(port)
    addresses = _listening_addresses(port)
    if not addresses:
        pytest.skip("no /proc/net/tcp to read listening sockets from")
    assert addresses == {"0100007F"}  # 127.0.0.1, little-endian hex; not 0.0.0.0 nor any ::


def test_no_process_of_the_ui_shows_the_store_on_its_command_line(ui_server):
    _, port, _ = ui_server
    listing = subprocess.run(
        ["ps", "-eww", "-o", "pid=,pgid=,args="], capture_output=True, text=True, check=True
    ).stdout
    processes = [line.split(None, 2) for line in listing.splitlines() if len(line.split(None, 2)) == 3]
    group = next(pgid for _, pgid, args in processes if f"mlops ui --port {port} " in args)
    ours = {int(pid): args for pid, pgid, args in processes if pgid == group}
    server = next(pid for pid, args in ours.items() if "-m mlflow ui" in args)
    assert any("uvicorn" in args for args in ours.values()), ours  # the workers are there to be looked at
    assert [args for args in ours.values() if "sqlite:" in args or "mlruns.db" in args] == []
    handed = Path(f"/proc/{server}/environ").read_bytes().split(b"\0")
    assert any(v.startswith(b"MLFLOW_BACKEND_STORE_URI=sqlite:///") and v.endswith(b"mlruns.db") for v in handed)


def test_ui_command_hands_the_environments_uris_over_in_variables(project):
    env = load_config(project).environment("local")
    store = f"sqlite:///{project.resolve() / 'mlruns.db'}"
    command = ui_command(env, port=5001)
    assert command.variables == {"MLFLOW_BACKEND_STORE_URI": store, "MLFLOW_REGISTRY_STORE_URI": store}
    command = ui_command(replace(env, registry_uri="sqlite:////tmp/registry.db"), port=5001)
    assert command.variables["MLFLOW_REGISTRY_STORE_URI"] == "sqlite:////tmp/registry.db"


def test_ui_command_line_holds_no_store_uri_nor_secret(project):
    secret_store = "postgresql://ml:s3cret-pw@db.internal/mlflow"
    env = replace(load_config(project).environment("local"), tracking_uri=secret_store)
    command = ui_command(env, port=5001)
    assert not any("s3cret" in arg or "postgresql" in arg for arg in command.argv)
    assert command.variables["MLFLOW_BACKEND_STORE_URI"] == secret_store  # what the subprocess is given
    assert "s3cret" not in repr(command)
    assert "postgresql://ml:***@db.internal/mlflow" in repr(command)


@pytest.mark.parametrize("uri", ["http://mlflow.dev.internal:5000", "https://mlflow.example.org"])
def test_server_environment_prints_its_url_and_starts_nothing(project, monkeypatch, uri):
    def no_process(*args, **kwargs):
        raise AssertionError(f"serve started a process: {args}")

    monkeypatch.setattr(subprocess, "call", no_process)
    monkeypatch.setattr(subprocess, "Popen", no_process)
    config = load_config(project)
    env = replace(config.environment("local"), name="dev", tracking_uri=uri)
    lines: list[str] = []
    assert serve(config, env, port=5999, echo=lines.append) == 0
    assert lines == [f"Environment 'dev' tracks to a server: open {uri} in a browser."]
