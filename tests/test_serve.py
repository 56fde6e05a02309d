"""`mlops serve`: real HTTP clients against a real server, started as a user starts it.

The project is a copy of the session's trained project (v1 is champion). The
server follows the alias every second here (`--poll 1`).
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner
from conftest import project_client

from mlops_template import load_config, read_predictions
from mlops_template.cli.main import main

NAME = "iris-e2e"
OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback, never a proxy


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def environment() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "MLOPS_"))}
    return env | {"MLFLOW_DISABLE_TELEMETRY": "true"}


@contextmanager
def serving(project: Path, *args: str) -> Iterator[tuple[str, Path]]:
    """`mlops serve` on a free port, as its own process; its base URL and its log, stopped afterwards."""
    port = free_port()
    log = project / "serve.log"
    command = [sys.executable, "-m", "mlops_template", "serve", "--port", str(port), "--poll", "1", *args]
    with open(log, "wb") as out:
        process = subprocess.Popen(command, cwd=project, env=environment(), stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):  # a hang guard, not a speed check: a minute at most
            if process.poll() is not None:
                pytest.fail(f"mlops serve exited {process.returncode}:\n{log.read_text()}")
            try:
                with OPENER.open(f"{url}/ping", timeout=5):
                    break
            except OSError:
                time.sleep(0.1)
        else:
            pytest.fail(f"mlops serve did not answer:\n{log.read_text()}")
        yield url, log
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def post(url: str, body: bytes, content_type: str = "application/json") -> tuple[int, dict, dict]:
    request = urllib.request.Request(f"{url}/invocations", data=body, headers={"Content-Type": content_type})
    try:
        with OPENER.open(request, timeout=30) as response:
            return response.status, dict(response.headers), json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), json.loads(exc.read())


def heldout(project: Path) -> pd.DataFrame:
    """The rows predict scored in the trained project's run: its champion's held-out rows, the label dropped."""
    return pd.read_parquet(project / "data" / "datasets" / "heldout.parquet").drop(columns=["species"])


def split(df: pd.DataFrame) -> bytes:
    return json.dumps({"dataframe_split": json.loads(df.to_json(orient="split", index=False))}).encode()


@pytest.fixture
def project(trained_copy: Path) -> Path:
    return trained_copy


def register_v2(project: Path) -> None:
    """Train and register v2, made champion by a gate that lets every model through (so by construction)."""
    toml = project / "mlops.toml"
    no_gate = "gate = { min = false, beat_champion = false }"
    toml.write_text(re.sub(r"gate = \{[^}]*\}", no_gate, toml.read_text(), count=1))
    trained = CliRunner().invoke(main, ["run", "--project", str(project), "--step", "train_model", "-P", "max_iter=5"])
    assert trained.exit_code == 0 and f"{NAME} v2 is champion" in trained.output, trained.output


def test_predictions_over_http_equal_the_predict_step_in_every_input_format(project):
    client = project_client(project)
    [parent] = [r for r in client.search_runs(["1"]) if "mlops.step" not in r.data.tags]
    expected = read_predictions(load_config(project), parent.info.run_id)["prediction"].tolist()
    rows = heldout(project)
    assert len(rows) == len(expected) == 45

    with serving(project) as (url, log):
        status, headers, body = post(url, split(rows))
        records = json.dumps({"dataframe_records": json.loads(rows.to_json(orient="records"))}).encode()
        by_records = post(url, records)
        by_csv = post(url, rows.to_csv(index=False).encode(), "text/csv")
        with OPENER.open(f"{url}/version") as response:
            version = response.read().decode()
        with OPENER.open(f"{url}/metrics") as response:
            metrics = response.read().decode()

    assert status == 200 and headers["x-model-version"] == "1"
    assert body["predictions"] == expected
    assert by_records[0] == 200 and by_records[2]["predictions"] == expected
    assert by_csv[0] == 200 and by_csv[2]["predictions"] == expected
    assert re.fullmatch(r"\d+\.\d+\.\d+.*", version)
    assert 'mlops_requests_total{version="1",status="200"} 3' in metrics
    assert f"Serving {NAME} v1 ('champion' in local)" in log.read_text()


def test_a_request_missing_a_column_or_of_a_wrong_type_gets_a_400_naming_it_and_no_stack_trace(project):
    rows = heldout(project).head(2)
    with serving(project) as (url, _):
        missing = post(url, split(rows.drop(columns=["petal_width"])))
        wrong = rows.astype(object)
        wrong.loc[0, "sepal_length"] = "long"
        mistyped = post(url, split(wrong))

    for status, headers, body in (missing, mistyped):
        assert status == 400, body
        assert headers["x-model-version"] == "1"
        assert "stack_trace" not in body and "Traceback" not in json.dumps(body)
    assert "petal_width" in missing[2]["message"] and "missing inputs" in missing[2]["message"]
    assert "sepal_length" in mistyped[2]["message"]


def test_a_champion_moved_by_promote_is_served_within_a_poll_and_no_request_fails_in_the_swap(project):
    register_v2(project)
    assert CliRunner().invoke(main, ["promote", "1", "--project", str(project)]).exit_code == 0
    body = split(heldout(project).head(5))

    with serving(project) as (url, log):
        answers: list[tuple[int, str]] = []
        done = threading.Event()

        def ask() -> None:
            while not done.is_set():
                status, headers, _ = post(url, body)
                answers.append((status, headers.get("x-model-version", "")))

        asking = threading.Thread(target=ask)
        asking.start()
        try:
            time.sleep(0.5)
            assert CliRunner().invoke(main, ["promote", "2", "--project", str(project)]).exit_code == 0
            for _ in range(300):  # within a poll of a second, give or take the load: 30 s at most
                if answers and answers[-1][1] == "2":
                    break
                time.sleep(0.1)
            time.sleep(0.5)
        finally:
            done.set()
            asking.join()
        with OPENER.open(f"{url}/metrics") as response:
            metrics = response.read().decode()

    assert {status for status, _ in answers} == {200}, answers
    versions = [version for _, version in answers]
    assert versions[0] == "1" and versions[-1] == "2"
    assert versions == sorted(versions)  # once swapped, never back
    assert "'champion' moved: now serving v2 (was v1)" in log.read_text()
    assert 'mlops_served_version{alias="champion"} 2' in metrics
    assert re.search(r'mlops_requests_total\{version="1",status="200"\} [1-9]', metrics)


def test_a_version_whose_files_do_not_match_is_refused_and_the_old_one_keeps_serving(project):
    register_v2(project)
    client = project_client(project)
    client.set_model_version_tag(NAME, "2", "mlops.model_sha256", "0" * 64)  # as if its files were changed
    assert CliRunner().invoke(main, ["promote", "1", "--project", str(project)]).exit_code == 0

    with serving(project) as (url, log):
        assert CliRunner().invoke(main, ["promote", "2", "--project", str(project)]).exit_code == 0
        for _ in range(300):
            if "which was refused" in log.read_text():
                break
            time.sleep(0.1)
        status, headers, _ = post(url, split(heldout(project).head(1)))

    assert "'champion' moved to v2, which was refused (" in log.read_text()
    assert "do not match the sha256 recorded at registration" in log.read_text()
    assert status == 200 and headers["x-model-version"] == "1"


def one_line(project: Path, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "mlops_template", "serve", *args],
        cwd=project,
        env=environment(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1, done.stdout + done.stderr
    assert "Traceback" not in done.stdout + done.stderr
    [line] = [line for line in (done.stdout + done.stderr).splitlines() if line.strip()]
    return line


def test_no_version_under_the_alias_is_one_line(project):
    line = one_line(project, "--alias", "candidate", "--port", str(free_port()))
    assert line.startswith(f"Error: environment 'local': no version of model '{NAME}' carries the alias 'candidate'")


def test_a_port_in_use_is_one_line(project):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        line = one_line(project, "--port", str(port))
    assert line.startswith(f"Error: cannot listen on 127.0.0.1:{port} (")
    assert line.endswith("pass another --port")


def test_files_that_do_not_match_their_sha256_at_start_are_one_line(project):
    project_client(project).set_model_version_tag(NAME, "1", "mlops.model_sha256", "0" * 64)
    line = one_line(project, "--port", str(free_port()))
    assert line.startswith(f"Error: model '{NAME}' v1: files do not match the sha256 recorded at registration")


def test_the_manifest_is_a_kserve_inference_service_pinning_the_champion_in_the_bucket(project):
    import gzip

    import jsonschema
    import yaml

    with open(project / "mlops.toml", "a") as toml:
        toml.write(
            '\n[environments.cluster]\nstorage = "s3://acme-ml-prod/iris"\ntracking_uri = "sqlite:///mlruns.db"\n'
        )
    text = project / "mlops.toml"
    text.write_text(re.sub(r'(?m)^service_account = "[^"]*"', 'service_account = "iris-runner"', text.read_text()))
    result = CliRunner().invoke(main, ["serve", "--manifest", "-e", "cluster", "--project", str(project)])
    assert result.exit_code == 0, result.output
    found = yaml.safe_load(result.output)

    vendored = Path(__file__).parent / "data" / "kserve-v0.20.0-inferenceservice-v1beta1.schema.json.gz"
    schema = json.loads(gzip.decompress(vendored.read_bytes()))["schema"]
    jsonschema.validate(found, schema)  # KServe v0.20.0's own schema of the resource
    predictor = found["spec"]["predictor"]
    assert (found["apiVersion"], found["kind"]) == ("serving.kserve.io/v1beta1", "InferenceService")
    assert predictor["model"]["modelFormat"] == {"name": "mlflow"}
    assert predictor["model"]["storageUri"] == f"s3://acme-ml-prod/iris/models/{NAME}/v1"
    assert predictor["serviceAccountName"] == "iris-runner"
    assert found["metadata"]["annotations"]["mlops/version"] == "1"
    broken = {**found, "spec": {"predictor": {**predictor, "minReplicas": "two"}}}
    with pytest.raises(jsonschema.ValidationError):  # the schema does check: a count as text is refused
        jsonschema.validate(broken, schema)


def test_a_manifest_for_local_storage_is_one_line(project):
    line = one_line(project, "--manifest")
    assert line.startswith("Error: environment 'local' keeps its data in a local folder (")
    assert line.endswith("write the manifest for an environment whose storage is a bucket (--environment prod)")
