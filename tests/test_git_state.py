"""A run records the code it ran; where it cannot, the run says so in one yellow line and how to fix it."""

from __future__ import annotations

import logging
import subprocess
import uuid
from pathlib import Path

import pytest
from click.testing import CliRunner
from mlflow import MlflowClient

from mlops_template.cli.main import main
from mlops_template.pipeline.provenance import git_state

WARNING = "Warning: code version not recorded for this run (mlops.git_commit=none)"


@pytest.fixture
def project(tmp_path: Path, shared_db: str, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A project with a one-step package on disk, outside any git repository."""
    for var in ("MLOPS_ENVIRONMENT", "MLOPS_STORAGE", "MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "MLFLOW_RUN_ID"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.delenv("MLOPS_GIT_COMMIT", raising=False)
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))  # git looks no higher than this test's folder
    package = f"gitstate_{uuid.uuid4().hex[:8]}"  # imported in this process: one name per test
    root = tmp_path / "project"
    (root / "src" / package).mkdir(parents=True)
    (root / "src" / package / "__init__.py").write_text("")
    (root / "src" / package / "main.py").write_text(
        "from mlops_template import Pipeline\n\n\ndef only(ctx):\n    pass\n\n\npipeline = Pipeline([only])\n"
    )
    (root / "mlops.toml").write_text(
        f'[project]\nname = "{package}"\npackage = "{package}"\n\n'
        "[model]\ngate = { min = false }\n\n"
        f'[environments.local]\nstorage = "data"\ntracking_uri = "{shared_db}"\n'
    )
    return root


def git(root: Path, *args: str) -> str:
    command = ["git", "-c", "user.name=t", "-c", "user.email=t@localhost", *args]
    return subprocess.run(command, cwd=root, check=True, capture_output=True, text=True).stdout.strip()


def run(root: Path):
    result = CliRunner().invoke(main, ["run", "--project", str(root)])
    assert result.exit_code == 0, result.output
    return result


def parent_tags(shared_db: str, name: str) -> dict[str, str]:
    client = MlflowClient(tracking_uri=shared_db)
    experiment = client.get_experiment_by_name(name)
    [parent] = client.search_runs([experiment.experiment_id], "tags.`mlops.steps` != ''")
    return parent.data.tags


def test_a_run_outside_a_repository_warns_and_still_tags_none(project, shared_db):
    result = run(project)
    [line] = [line for line in result.output.splitlines() if line.startswith("Warning:")]
    assert line.startswith(WARNING)
    assert f"{project}: not a git repository" in line
    assert line.endswith("commit the code there: git init && git add -A && git commit -m start")
    tags = parent_tags(shared_db, _name(project))
    assert tags["mlops.git_commit"] == "none" and tags["mlops.git_dirty"] == "unknown"


def test_a_run_in_a_repository_records_the_commit_without_a_warning(project, shared_db):
    git(project, "init", "--quiet")
    git(project, "add", "--all")
    git(project, "commit", "--quiet", "-m", "start")
    result = run(project)
    assert "Warning" not in result.output
    tags = parent_tags(shared_db, _name(project))
    assert tags["mlops.git_commit"] == git(project, "rev-parse", "HEAD")
    assert tags["mlops.git_dirty"] in ("true", "false")


def _name(project: Path) -> str:
    return next(p.name for p in (project / "src").iterdir())


def test_a_repository_without_a_commit_says_so(project, caplog):
    git(project, "init", "--quiet")
    with caplog.at_level(logging.WARNING, logger="mlops_template"):
        state = git_state(project)
    assert state.commit == "none" and state.dirty is None
    [record] = caplog.records
    assert record.getMessage().endswith(
        ": the repository has no commit yet; commit the code there: git init && git add -A && git commit -m start"
    )


def test_without_git_installed_the_fix_is_to_install_it(project, caplog, monkeypatch, tmp_path):
    empty = tmp_path / "no-git-here"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    with caplog.at_level(logging.WARNING, logger="mlops_template"):
        state = git_state(project)
    assert state.tags == {"mlops.git_commit": "none", "mlops.git_dirty": "unknown"}
    [record] = caplog.records
    assert record.getMessage().endswith(
        f"{project}: git is not installed; install git, or in an image set MLOPS_GIT_COMMIT to the commit it was built from"
    )


# -- in an image: no git, the commit it was built from passed in ----------------------------------------

SHA = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture
def in_image(project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The project as an image runs it: no git on PATH, no repository."""
    empty = tmp_path / "no-git-here"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    return project


@pytest.mark.parametrize(("value", "dirty"), [(SHA, "false"), (f"{SHA}-dirty", "true")])
def test_in_an_image_the_run_records_the_commit_it_was_built_from(in_image, shared_db, monkeypatch, value, dirty):
    monkeypatch.setenv("MLOPS_GIT_COMMIT", value)
    result = run(in_image)
    assert "Warning" not in result.output
    tags = parent_tags(shared_db, _name(in_image))
    assert tags["mlops.git_commit"] == SHA and tags["mlops.git_dirty"] == dirty


def test_a_value_that_is_not_a_commit_is_not_recorded_as_one(in_image, caplog, monkeypatch):
    monkeypatch.setenv("MLOPS_GIT_COMMIT", "latest")
    with caplog.at_level(logging.WARNING, logger="mlops_template"):
        state = git_state(in_image)
    assert state.tags == {"mlops.git_commit": "none", "mlops.git_dirty": "unknown"}
    [record] = caplog.records
    assert "MLOPS_GIT_COMMIT='latest' is not a commit SHA" in record.getMessage()


def test_a_repository_outweighs_the_variable(project, monkeypatch):
    git(project, "init", "--quiet")
    git(project, "add", "--all")
    git(project, "commit", "--quiet", "-m", "start")
    monkeypatch.setenv("MLOPS_GIT_COMMIT", SHA)
    assert git_state(project).commit == git(project, "rev-parse", "HEAD")
