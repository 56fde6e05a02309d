"""A rendered project's CI: the GitHub Actions workflow passes actionlint; the Jenkinsfile has the same stages.

Both test every change, build the image with the project's own script, and push it to ECR from
main through a role: no AWS key is stored or written anywhere.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from mlops_template.scaffold.new import new_project

BIN = Path(sys.executable).parent  # the test venv's commands: actionlint
CREDENTIAL = re.compile(
    r"AKIA[0-9A-Z]{12,}|aws-access-key-id|aws-secret-access-key|AWS_SECRET_ACCESS_KEY|secrets\.|"
    r"withCredentials|credentials\(|password\s*[:=]",
    re.IGNORECASE,
)


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    return new_project("shipped", directory=tmp_path_factory.mktemp("ci") / "shipped", lock=False)


@pytest.fixture(scope="module")
def workflow(project) -> dict:
    return yaml.safe_load((project / ".github" / "workflows" / "ci.yml").read_text())


def steps(job: dict) -> list[dict]:
    return job["steps"]


# -- GitHub Actions ------------------------------------------------------------------------------------


def test_actionlint_passes_with_shellcheck_on_the_run_steps(project):
    assert shutil.which("shellcheck"), "actionlint checks run: steps with shellcheck; install it"
    done = subprocess.run([str(BIN / "actionlint"), "-no-color"], cwd=project, capture_output=True, text=True)
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")


def test_tests_run_on_every_pull_request_and_on_main(workflow):
    triggers = workflow[True]  # YAML 1.1 reads the key `on` as true
    assert triggers == {"pull_request": None, "push": {"branches": ["main"]}}
    test = workflow["jobs"]["test"]
    runs = "\n".join(step.get("run", "") for step in steps(test))
    assert "uv sync --frozen --extra test" in runs and "uv run --frozen --no-sync pytest" in runs
    assert "ruff check" in runs and "ruff format --check" in runs
    # The uv that wrote the lock: the version the Dockerfile names.
    assert "sed -n 's/^ARG UV_VERSION=//p' Dockerfile" in runs
    assert workflow["env"]["UV_PYTHON_DOWNLOADS"] == "never"


def test_the_image_is_built_after_the_tests_and_pushed_from_main_through_an_oidc_role(workflow):
    image = workflow["jobs"]["image"]
    assert image["needs"] == "test"
    assert workflow["permissions"] == {"contents": "read"}  # the default: nothing may write
    assert image["permissions"] == {"contents": "read", "id-token": "write"}  # the OIDC token, for this job only
    by_name = {step.get("name", step.get("uses")): step for step in steps(image)}
    assert by_name["Build the image"]["run"] == "bash scripts/build_image.sh"
    assert by_name["Build the image"]["if"] == "github.event_name == 'pull_request'"
    role = by_name["AWS credentials from the OIDC role"]
    assert role["uses"].startswith("aws-actions/configure-aws-credentials@")
    assert set(role["with"]) == {"role-to-assume", "aws-region"}  # a role to assume, no key
    assert role["with"]["role-to-assume"] == "${{ vars.AWS_ROLE_ARN }}"
    push = by_name["Build the image and push it to ECR"]
    assert push["run"] == 'bash scripts/build_image.sh --push "$REPOSITORY"'
    assert push["env"]["REPOSITORY"] == "${{ steps.ecr.outputs.registry }}/${{ vars.ECR_REPOSITORY }}"
    # Only a push (to main: the only branch pushes run on) assumes the role and pushes.
    pushing = [s for s in steps(image) if "uses" in s and "aws-actions" in s["uses"]] + [push]
    assert all(step["if"] == "github.event_name == 'push'" for step in pushing)


def test_the_workflow_holds_no_credential(project):
    text = (project / ".github" / "workflows" / "ci.yml").read_text()
    # The one secret it names: Airflow's API token, which sets the DAG's image tag Variable.
    assert text.count("secrets.") == 1 and "${{ secrets.AIRFLOW_API_TOKEN }}" in text
    text = text.replace("${{ secrets.AIRFLOW_API_TOKEN }}", "")
    assert not CREDENTIAL.search(text), CREDENTIAL.search(text)


# -- Jenkins ---------------------------------------------------------------------------------------


def jenkins_stages(text: str) -> dict[str, str]:
    """Each `stage('Name') { ... }` of a declarative pipeline, by name, with its body (braces matched)."""
    stages = {}
    for match in re.finditer(r"stage\('([^']+)'\)\s*\{", text):
        depth, end = 1, match.end()
        while depth:
            depth += {"{": 1, "}": -1}.get(text[end], 0)
            end += 1
        stages[match.group(1)] = text[match.end() : end - 1]
    return stages


def test_jenkinsfile_tests_builds_and_pushes_from_main_like_the_workflow(project):
    text = (project / "Jenkinsfile").read_text()
    assert text.count("{") == text.count("}") and text.count("'''") % 2 == 0
    assert re.search(r"^pipeline \{\n    agent any\n", text, re.MULTILINE)
    stages = jenkins_stages(text)
    assert list(stages) == ["Test", "Build image", "Push to ECR", "Point the DAG at the image"]
    test = stages["Test"]
    assert "when" not in test  # every change is tested
    for command in ("sync --frozen --extra test", "ruff check .", "ruff format --check .", "pytest"):
        assert command in test
    assert "uv==$(sed -n 's/^ARG UV_VERSION=//p' Dockerfile)" in test
    assert (
        "when { not { branch 'main' } }" in stages["Build image"]
        and "bash scripts/build_image.sh" in stages["Build image"]
    )
    push = stages["Push to ECR"]
    assert "when { branch 'main' }" in push
    assert 'bash scripts/build_image.sh --push "$ECR_REPOSITORY"' in push
    assert "--password-stdin" in push  # the registry's token through a pipe, never as an argument
    assert "UV_PYTHON_DOWNLOADS = 'never'" in text


BINDING = "withCredentials([string(credentialsId: 'airflow-api-token', variable: 'AIRFLOW_API_TOKEN')])"


def test_jenkinsfile_sets_the_dags_image_tag_from_main_with_a_bound_token(project, workflow):
    stage = jenkins_stages((project / "Jenkinsfile").read_text())["Point the DAG at the image"]
    assert "when { allOf { branch 'main'; expression { env.AIRFLOW_API_URL } } }" in stage
    assert BINDING in stage
    # The same requests as the workflow's step, for the commit just built.
    [github] = [s for s in steps(workflow["jobs"]["image"]) if s.get("name", "").startswith("Point the DAG")]
    for request in ('airflow PATCH "variables/$', "|| airflow POST variables", "Authorization: Bearer", "-H @-"):
        assert request in github["run"] and request in stage
    assert '"$(git rev-parse HEAD)"' in stage and "$AIRFLOW_API_TOKEN" in stage


def sh_script(stage: str) -> str:
    """The shell script of a Jenkins stage's `sh '''...'''` step."""
    return re.search(r"sh '''\n(.*?)'''", stage, re.DOTALL).group(1)


@pytest.mark.parametrize("ci", ["github", "jenkins"])
def test_the_airflow_token_reaches_curl_on_stdin_and_never_on_its_command_line(project, workflow, tmp_path, ci):
    """Each CI file's script, run with a curl that records its arguments and input; the first request fails."""
    if ci == "github":
        [step] = [s for s in steps(workflow["jobs"]["image"]) if s.get("name", "").startswith("Point the DAG")]
        script = step["run"]
    else:
        script = sh_script(jenkins_stages((project / "Jenkinsfile").read_text())["Point the DAG at the image"])
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "curl").write_text(
        '#!/bin/sh\nprintf \'%s\\n\' "$*" >> "$CALLS"\ncat >> "$CALLS"\n'
        'case "$*" in *PATCH*) exit 22;; esac\n'  # the Variable does not exist yet: PATCH fails, POST follows
    )
    (fake / "curl").chmod(0o755)
    token = "airflow-token-0123456789"
    env = {
        "PATH": f"{fake}:/usr/bin:/bin",
        "CALLS": str(tmp_path / "calls"),
        "AIRFLOW_API_URL": "http://airflow.example",
        "AIRFLOW_API_TOKEN": token,
        "VARIABLE": "shipped_image_tag",
        "AIRFLOW_IMAGE_TAG_VARIABLE": "shipped_image_tag",
        "GITHUB_SHA": "a" * 40,
    }
    done = subprocess.run(
        ["bash", "-eo", "pipefail", "-c", script], cwd=project, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    calls = (tmp_path / "calls").read_text().splitlines()
    argv = [line for line in calls if line.startswith("-fsS")]
    assert len(argv) == 2 and "PATCH" in argv[0] and "POST" in argv[1]
    assert all(token not in line and "-H @-" in line for line in argv)  # never on a command line
    assert calls.count(f"Authorization: Bearer {token}") == 2  # on stdin, each time


def test_jenkinsfile_holds_no_credential(project):
    text = (project / "Jenkinsfile").read_text()
    # The one credential it names: Airflow's API token, bound by id from Jenkins' own store.
    assert text.count("withCredentials") == 1 and BINDING in text
    text = text.replace(BINDING, "")
    assert not CREDENTIAL.search(text), CREDENTIAL.search(text)
