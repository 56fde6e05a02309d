"""What a run records for its reproduction: commit, uncommitted diff without secrets, packages, Python, platform."""

from __future__ import annotations

import importlib.metadata
import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import store_client

from mlops_template import Pipeline, StepContext, load_config
from mlops_template.pipeline.provenance import MAX_DIFF_BYTES, capture, installed_packages, is_secret
from mlops_template.pipeline.runner import run_pipeline


def git(root: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=root, check=True, capture_output=True, text=True).stdout.strip()


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    root.mkdir()
    git(root, "init", "-q", "--initial-branch=main")
    git(root, "config", "user.email", "t@example.com")
    git(root, "config", "user.name", "t")
    (root / "steps.py").write_text("x = 1\n")
    (root / "deploy.pem").write_text("-----BEGIN KEY-----\nold\n")
    git(root, "add", "-A")
    git(root, "commit", "-qm", "start")
    return root


def test_a_clean_tree_records_no_diff(repo):
    found = capture(repo)
    assert found.git.dirty is False and found.diff is None
    assert found.tags["mlops.git_diff"] == "none"
    assert found.tags["mlops.git_commit"] == git(repo, "rev-parse", "HEAD")


def test_a_dirty_tree_records_the_diff_of_tracked_files_without_secrets(repo, caplog):
    (repo / "steps.py").write_text("x = 2\n")
    (repo / "deploy.pem").write_text("-----BEGIN KEY-----\nnew secret\n")
    (repo / "notes.txt").write_text("untracked\n")
    with caplog.at_level(logging.WARNING, logger="mlops_template"):
        found = capture(repo)
    assert found.git.dirty is True
    assert found.withheld == ["deploy.pem"] and found.untracked == ["notes.txt"]
    assert "deploy.pem" in caplog.text and "secrets" in caplog.text
    text = found.diff.decode()
    assert "+x = 2" in text and "secret" not in text and "notes.txt" not in text
    assert found.tags["mlops.git_diff"] == str(len(found.diff))
    # The diff is what `git apply` takes: applied to a clean checkout it gives the changed file back.
    git(repo, "stash", "-u")
    subprocess.run(["git", "apply", "-"], cwd=repo, input=found.diff, check=True)
    assert (repo / "steps.py").read_text() == "x = 2\n"


def test_a_diff_over_the_cap_is_not_recorded_and_a_warning_says_so(repo, caplog):
    (repo / "steps.py").write_text("x = '" + "a" * (MAX_DIFF_BYTES + 10) + "'\n")
    with caplog.at_level(logging.WARNING, logger="mlops_template"):
        found = capture(repo)
    assert found.diff is None and "cap" in found.diff_problem
    assert found.tags["mlops.git_diff"] == "not recorded"
    assert "not recorded" in caplog.text


@pytest.mark.parametrize(
    ("path", "secret"),
    [(".env", True), ("conf/server.pem", True), ("aws_credentials.json", True), ("tls.key", True)]
    + [(".env.local", True), ("deploy/.env.production", True), ("ssh/id_rsa", True), (".netrc", True)]
    + [(".pgpass", True), ("certs/client.p12", True), (".git-credentials", True)]
    + [(".env.example", False), ("src/keyboard.py", False), ("README.md", False), ("src/secrets_client.py", False)],
)
def test_secret_looking_names(path, secret):
    assert is_secret(path) is secret


def test_packages_are_every_installed_distribution_with_its_version():
    packages = installed_packages()
    assert packages["mlflow"] == importlib.metadata.version("mlflow")
    assert packages["scikit-learn"] == importlib.metadata.version("scikit-learn")
    assert len(packages) == len({d.metadata["Name"].lower() for d in importlib.metadata.distributions()})


@pytest.mark.parametrize(
    ("line", "kind"),
    [
        ('KEY = "-----BEGIN OPENSSH PRIVATE KEY-----b3BlbnNzaC1rZXktdjEAAAAA"', "a private key"),
        ("AWS_ID = 'AKIAIOSFODNN7EXAMPLE'", "an AWS access key id"),
        ("PASSWORD = 'hunter2-in-the-code'", "the value of a secret environment variable"),
    ],
)
def test_a_diff_holding_a_secret_is_not_recorded_and_the_warning_does_not_show_it(
    repo, caplog, monkeypatch, line, kind
):
    monkeypatch.setenv("WAREHOUSE_PASSWORD", "hunter2-in-the-code")
    (repo / "steps.py").write_text(f"x = 2\n{line}\n")
    with caplog.at_level(logging.WARNING, logger="mlops_template"):
        found = capture(repo)
    assert found.diff is None and found.diff_problem == f"the diff holds {kind}"
    assert found.tags["mlops.git_diff"] == "not recorded" and "mlops.git_diff_sha256" not in found.tags
    assert f"not recorded: the diff holds {kind}" in caplog.text
    assert "AKIAIOSFODNN7EXAMPLE" not in caplog.text and "hunter2" not in caplog.text and "b3Blbn" not in caplog.text


def test_a_recorded_diff_carries_its_sha256(repo):
    import hashlib

    (repo / "steps.py").write_text("x = 2\n")
    found = capture(repo)
    assert found.tags["mlops.git_diff_sha256"] == hashlib.sha256(found.diff).hexdigest()


def write(ctx: StepContext) -> None:
    import pandas as pd

    ctx.write("numbers", pd.DataFrame({"x": [1, 2, 3]}))


def test_the_pipeline_run_and_each_step_run_record_provenance(tiny_project, shared_db):
    config = load_config(tiny_project)
    result = run_pipeline(Pipeline([write]), config)
    client = store_client(shared_db)
    for run_id in (result.run_id, result.steps[0].run_id):
        tags = client.get_run(run_id).data.tags
        assert tags["mlops.python"].endswith(".".join(map(str, sys.version_info[:3])))
        assert tags["mlops.platform"].startswith(sys.platform)
        recorded = json.loads(Path(client.download_artifacts(run_id, "mlops/environment.json")).read_text())
        assert recorded["packages"]["mlflow"] == importlib.metadata.version("mlflow")
        from mlops_template.pipeline.provenance import packages_hash

        assert tags["mlops.packages"] == packages_hash(recorded["packages"])


def test_reproduce_names_the_packages_whose_versions_differ_from_the_recorded_ones(caplog):
    from mlops_template.lineage.reproduce import package_differences

    installed = installed_packages()
    recorded = {**installed, "mlflow": "0.0.1", "gone-package": "1.0"}
    recorded.pop("pandas")
    with caplog.at_level(logging.WARNING, logger="mlops_template"):
        differing = package_differences(recorded)
    assert differing == [
        ("gone-package", "1.0", None),
        ("mlflow", "0.0.1", installed["mlflow"]),
        ("pandas", None, installed["pandas"]),
    ]
    assert f"mlflow 0.0.1 → {installed['mlflow']}" in caplog.text and "gone-package" in caplog.text
