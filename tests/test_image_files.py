"""A rendered project's Dockerfile, .dockerignore and image scripts, checked without building anything.

hadolint lints the Dockerfile, shellcheck every script of the project; each script
answers `--help`; `build_image.sh` refuses a work tree whose code no commit names, and a
project without its lock, before it touches a container engine. Building and running the
image is `test_image.py`.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from mlops_template.scaffold.lock import uv_version
from mlops_template.scaffold.new import new_project

BIN = Path(sys.executable).parent  # the test venv's commands: hadolint, uv
REPO = Path(__file__).resolve().parents[1]
SCRIPTS = ["build_image.sh", "run_image.sh", "run_image_cloud.sh"]
# A container engine that cannot run: a script that reached it would fail with another message.
BASH = shutil.which("bash") or "bash"
NO_ENGINE = {"CONTAINER_ENGINE": "/nonexistent/engine"}


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    return new_project("boxed", directory=tmp_path_factory.mktemp("files") / "boxed", lock=False)


def bash(project: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("MLOPS_", "AWS_"))} | (env or {})
    return subprocess.run([BASH, *args], cwd=project, env=environment, capture_output=True, text=True, timeout=120)


# -- Dockerfile ---------------------------------------------------------------------------------------


def test_hadolint_finds_nothing_in_the_dockerfile(project):
    # No rule is ignored: nothing to configure, nothing to explain.
    done = subprocess.run(
        [str(BIN / "hadolint"), "--no-color", "--format", "json", "Dockerfile"],
        cwd=project,
        capture_output=True,
        text=True,
    )
    assert (done.returncode, json.loads(done.stdout)) == (0, []), done.stdout + done.stderr


def instructions(stage: str) -> list[tuple[str, str]]:
    """(instruction, arguments) of one stage's lines after its FROM; continuation lines and comments aside."""
    lines = stage.splitlines()[1:]
    return [tuple(line.split(None, 1)) for line in lines if line and not line.startswith((" ", "#"))]


def test_dockerfile_builds_in_two_stages_from_the_plain_tag_and_runs_as_a_fixed_user(project):
    text = (project / "Dockerfile").read_text()
    head, builder, final = re.split(r"^FROM ", text, flags=re.MULTILINE)
    # Both stages on one base: the official plain tag unless BASE_IMAGE names another (a mirror's copy).
    assert "\nARG BASE_IMAGE=python:3.11-slim-bookworm\n" in head
    assert builder.startswith("${BASE_IMAGE} AS builder\n") and final.startswith("${BASE_IMAGE}\n")
    # The builder: uv from pip in a venv of its own, at the version that wrote the lock (CI installs it too).
    assert re.search(
        r'python3 -m venv /opt/uv\s*\\\s*&& /opt/uv/bin/pip install --no-cache-dir "uv==\$\{UV_VERSION\}"', builder
    )
    assert ("ARG", f"UV_VERSION={uv_version()}") in instructions(builder)
    assert "UV_PYTHON_DOWNLOADS=never" in builder and "uv sync --frozen --no-dev" in builder
    # The final stage: the environment and the source only, a fixed non-root uid, mlops as the entry point.
    final_steps = instructions(final)
    assert [args for word, args in final_steps if word == "COPY"] == [
        "--from=builder /app/.venv /app/.venv",
        "mlops.toml MLproject ./",
        "src/ src/",
    ]
    assert ("ARG", "UID=10001") in final_steps and [a for w, a in final_steps if w == "USER"] == ["${UID}"]
    assert final_steps[-2:] == [("ENTRYPOINT", '["mlops"]'), ("CMD", '["run"]')]
    assert "MLOPS_ENVIRONMENT=local" in final


def test_dockerignore_keeps_data_stores_output_history_and_environments_out(project):
    patterns = {
        line.strip()
        for line in (project / ".dockerignore").read_text().splitlines()
        if line and not line.startswith("#")
    }
    assert {
        "data",
        "mlruns",
        "mlruns.db",
        "mlartifacts",
        ".mlops",
        ".git",
        ".venv",
        "**/.ipynb_checkpoints",
    } <= patterns
    assert {".env", ".aws"} <= patterns
    # Root-level patterns only: `data` must not hide src/<package>/data/, the make_data step.
    assert not [p for p in patterns if p.startswith("**/data")]


# -- scripts ------------------------------------------------------------------------------------------


def test_shellcheck_passes_on_every_script(project):
    scripts = [*sorted((project / "scripts").glob("*.sh")), project / "examples" / "run_pipeline.sh"]
    scripts.append(REPO / "scripts" / "debian_packages.sh")  # what the tests install their Debian packages with
    assert len(scripts) == 6
    done = subprocess.run(
        [shutil.which("shellcheck") or "shellcheck", "-x", *map(str, scripts)], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("script", SCRIPTS)
def test_scripts_stop_at_the_first_error(project, script):
    text = (project / "scripts" / script).read_text()
    assert "set -euo pipefail" in text
    assert text.startswith("#!/usr/bin/env bash\n")


ENGINE_HELPER = 'set -euo pipefail; source scripts/_engine.sh; find_engine; echo "$ENGINE $IMAGE_NAME $PROJECT_DIR"'


def test_the_sourced_engine_helper_takes_the_named_engine_and_names_the_project(project, tmp_path):
    done = bash(project, "-c", ENGINE_HELPER, env={"CONTAINER_ENGINE": "/opt/bin/podman"})
    assert (done.returncode, done.stderr) == (0, "")
    assert done.stdout == f"/opt/bin/podman boxed {project}\n"


def test_the_sourced_engine_helper_stops_its_caller_with_one_line_when_no_engine_is_installed(project, tmp_path):
    bare = tmp_path / "bin"  # a PATH with what the helper needs and no docker or podman
    bare.mkdir()
    (bare / "dirname").symlink_to(shutil.which("dirname"))
    done = bash(project, "-c", ENGINE_HELPER + "; echo reached", env={"PATH": str(bare), "CONTAINER_ENGINE": ""})
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr == (
        "error: neither docker nor podman is installed; install one, or name it with CONTAINER_ENGINE\n"
    )


@pytest.mark.parametrize("script", SCRIPTS)
def test_each_script_explains_itself_with_help(project, script):
    done = bash(project, f"scripts/{script}", "--help", env=NO_ENGINE)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"Usage: scripts/{script} ")
    assert "docker or podman" in done.stdout and done.stderr == ""


def test_debian_packages_script_explains_itself_and_installs_nothing_present():
    done = subprocess.run(["bash", "scripts/debian_packages.sh", "--help"], cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.startswith("Usage: scripts/debian_packages.sh")
    assert "bash scripts/debian_packages.sh\n" in (REPO / "scripts" / "test.sh").read_text()


def test_build_image_refuses_uncommitted_changes(tmp_path, project):
    copy = tmp_path / "boxed"
    subprocess.run(["git", "clone", "--quiet", str(project), str(copy)], check=True)
    (copy / "uv.lock").write_text("version = 1\n")  # what a lock would be: committed, so the tree is clean
    subprocess.run(["git", "-C", str(copy), "add", "uv.lock"], check=True)
    subprocess.run(
        ["git", "-C", str(copy), "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "lock"], check=True
    )
    with open(copy / "src" / "boxed" / "main.py", "a") as source:
        source.write("# an edit not committed\n")

    done = bash(copy, "scripts/build_image.sh", env=NO_ENGINE)

    sha = subprocess.run(["git", "-C", str(copy), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    assert done.returncode == 1
    assert done.stderr.splitlines() == [
        " M src/boxed/main.py",
        f"error: the work tree has uncommitted changes (above), so commit {sha} is not the code to build; "
        "commit them, or pass --allow-dirty",
    ]
    # --allow-dirty goes on, to the engine (which cannot run here), having tagged the build <sha>-dirty.
    allowed = bash(copy, "scripts/build_image.sh", "--allow-dirty", env=NO_ENGINE)
    assert allowed.returncode != 0 and "/nonexistent/engine" in allowed.stderr
    assert "uncommitted" not in allowed.stderr


def test_build_image_refuses_a_project_without_its_lock(project):
    done = bash(project, "scripts/build_image.sh", env=NO_ENGINE)
    assert done.returncode == 1
    assert done.stderr.strip() == (
        "error: uv.lock is missing: the image installs exactly what it pins; "
        "run UV_PYTHON_DOWNLOADS=never uv lock, commit it, build again"
    )


def test_run_image_cloud_refuses_the_local_environment_and_a_missing_one(project):
    local = bash(project, "scripts/run_image_cloud.sh", "--environment", "local", env=NO_ENGINE)
    assert local.returncode == 1
    assert local.stderr.strip() == (
        "error: the local environment runs with scripts/run_image.sh, which mounts this folder's data"
    )
    unnamed = bash(project, "scripts/run_image_cloud.sh", env=NO_ENGINE)
    assert unnamed.returncode == 1
    assert (
        unnamed.stderr.strip() == "error: name the environment to run on: --environment dev (or set MLOPS_ENVIRONMENT)"
    )


def test_readme_shows_build_run_and_ci_in_five_lines_and_a_step_per_container(project):
    section = (project / "README.md").read_text().split("## Image and CI\n", 1)[1].split("\n### ", 1)[0]
    commands = re.search(r"```bash\n(.*?)```", section, re.DOTALL).group(1).splitlines()
    ci = [line for line in section.splitlines() if line.startswith("CI:")]
    assert len(commands) + len(ci) <= 5
    assert [c.split("#")[0].split()[:2] for c in commands] == [["bash", f"scripts/{s}"] for s in SCRIPTS]
    assert ".github/workflows/ci.yml" in ci[0] and "Jenkinsfile" in ci[0]
    assert re.search(r"boxed:<commit SHA> run --step train_model --environment dev --pipeline-run \S+", section)
