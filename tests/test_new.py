"""`mlops new`: the rendered file set, its contents, its first commit, and the names it refuses."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from mlops_template import load_config
from mlops_template.cli.main import main
from mlops_template.errors import ProjectError
from mlops_template.scaffold.new import new_project, template_path
from mlops_template.scaffold.wheel import wheel_name

EXPECTED_FILES = [
    ".copier-answers.yml",
    ".dockerignore",
    ".env.example",
    ".github/workflows/ci.yml",
    ".gitignore",
    "Dockerfile",
    "Jenkinsfile",
    "MLproject",
    "README.md",
    "compose.yaml",
    "dags/{name}.py",
    "data/raw/README.md",
    "examples/run_pipeline.py",
    "examples/run_pipeline.sh",
    "mlops.toml",
    "notebooks/README.md",
    "pyproject.toml",
    "scripts/_engine.sh",
    "scripts/build_image.sh",
    "scripts/run_image.sh",
    "scripts/run_image_cloud.sh",
    "src/{pkg}/__init__.py",
    "src/{pkg}/data/__init__.py",
    "src/{pkg}/data/make_data.py",
    "src/{pkg}/features/__init__.py",
    "src/{pkg}/features/build_features.py",
    "src/{pkg}/lib/__init__.py",
    "src/{pkg}/lib/evaluation.py",
    "src/{pkg}/main.py",
    "src/{pkg}/models/__init__.py",
    "src/{pkg}/models/predict.py",
    "src/{pkg}/models/train_model.py",
    "tests/test_pipeline.py",
    "tests/test_steps.py",
    f"vendor/{wheel_name()}",
]
LOCK = "uv.lock"  # written unless --no-lock; made by uv, not rendered from the template

_GIT_IDENTITY_VARS = (
    "GIT_AUTHOR_NAME",
    "GIT_AUTHOR_EMAIL",
    "GIT_AUTHOR_DATE",
    "GIT_COMMITTER_NAME",
    "GIT_COMMITTER_EMAIL",
    "GIT_COMMITTER_DATE",
    "EMAIL",
    "GIT_DIR",
    "GIT_WORK_TREE",
    "GIT_INDEX_FILE",
)


def _isolate_git(mp: pytest.MonkeyPatch, home: Path) -> None:
    """A machine where git has no identity: no system or global config, no identity variables."""
    home.mkdir(parents=True, exist_ok=True)
    mp.setenv("HOME", str(home))
    mp.setenv("GIT_CONFIG_NOSYSTEM", "1")
    mp.setenv("GIT_CONFIG_GLOBAL", os.devnull)
    mp.delenv("XDG_CONFIG_HOME", raising=False)
    for var in _GIT_IDENTITY_VARS:
        mp.delenv(var, raising=False)


@pytest.fixture(autouse=True)
def no_git_identity(tmp_path, monkeypatch):
    _isolate_git(monkeypatch, tmp_path / "home")


@pytest.fixture(scope="module")
def rendered(tmp_path_factory) -> Path:
    """One project rendered through the CLI with an explicit package, shared by the read-only checks."""
    base = tmp_path_factory.mktemp("new")
    with pytest.MonkeyPatch.context() as mp:
        _isolate_git(mp, base / "home")
        result = CliRunner().invoke(
            main,
            ["new", "churn-model", "--directory", str(base / "churn"), "--package", "churner"],
            catch_exceptions=False,
        )
    assert result.exit_code == 0, result.output
    assert f"Created project churn-model in {base / 'churn'}" in result.output
    return base / "churn"


def git(project: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=project, capture_output=True, text=True, check=True).stdout


def project_files(project: Path) -> list[str]:
    return sorted(
        p.relative_to(project).as_posix()
        for p in project.rglob("*")
        if p.is_file() and ".git" not in p.relative_to(project).parts
    )


def expected(pkg: str, *, name: str | None = None, lock: bool = False) -> list[str]:
    name = name or pkg.replace("_", "-")
    return sorted([f.format(pkg=pkg, name=name) for f in EXPECTED_FILES] + ([LOCK] if lock else []))


# -- what is rendered ----------------------------------------------------------------------


def test_renders_exactly_the_expected_files(rendered):
    assert project_files(rendered) == expected("churner", name="churn-model", lock=True)


def test_the_expected_files_are_the_templates_files(rendered):
    # Guards the list above: every template file is rendered, under its rendered name.
    template = template_path() / "project"
    sources = {
        p.relative_to(template)
        .as_posix()
        .removesuffix(".jinja")
        .replace("{{package_name}}", "churner")
        .replace("{{_copier_conf.answers_file}}", ".copier-answers.yml")
        for p in template.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts and not p.name.endswith(".pyc")
    }
    # The lock, the library's wheel and the DAG (`mlops dag`) are made, not rendered.
    made = {LOCK, f"vendor/{wheel_name()}", "dags/churn-model.py"}
    assert sorted(sources | made) == project_files(rendered)


def test_no_template_syntax_is_left(rendered):
    for path in rendered.rglob("*"):
        parts = path.relative_to(rendered).parts
        if path.is_file() and ".git" not in parts and "vendor" not in parts:
            text = path.read_text(encoding="utf-8").replace("${{", "")  # GitHub Actions' own expressions stay
            if parts[0] == "dags":  # Airflow's own templates, rendered when the DAG runs
                text = text.replace("{{ run_id }}", "").replace("{{ image_tag() }}", "")
            if parts[0] == "scripts":  # the container engine's own Go template (image inspect --format)
                text = text.replace("'{{ index .Config.Labels ", "")
            assert "{{" not in text and "{%" not in text and "{#" not in text, path
    assert not [p for p in rendered.rglob("*") if "{{" in p.name or p.name.endswith(".jinja")]


def test_python_files_compile(rendered):
    sources = [p for p in rendered.rglob("*.py") if ".git" not in p.parts]
    assert len(sources) == len([f for f in expected("churner", name="churn-model") if f.endswith(".py")])
    for path in sources:
        compile(path.read_text(encoding="utf-8"), str(path), "exec")


def test_config_names_the_project_and_package(rendered):
    config = load_config(rendered)
    assert config.root == rendered.resolve()
    assert config.name == "churn-model"
    assert config.package == "churner"
    assert config.model.name == "churn-model"
    assert set(config.environments) == {"local", "dev", "prod", "stack"}
    assert config.environment("local").tracking_uri == f"sqlite:///{rendered.resolve() / 'mlruns.db'}"


def test_package_option_is_used_wherever_the_package_is_named(rendered):
    assert (rendered / "src" / "churner" / "main.py").is_file()
    assert not (rendered / "src" / "churn_model").exists()
    pyproject = tomllib.loads((rendered / "pyproject.toml").read_text())
    assert pyproject["project"]["name"] == "churn-model"
    assert pyproject["tool"]["hatch"]["build"]["targets"]["wheel"]["packages"] == ["src/churner"]
    entry_points = yaml.safe_load((rendered / "MLproject").read_text())["entry_points"]
    assert all("-m churner.main" in e["command"] for e in entry_points.values())
    assert "from churner.main import pipeline" in (rendered / "tests" / "test_pipeline.py").read_text()
    for path in rendered.rglob("*"):  # the default package name derived from the project name is nowhere
        if path.is_file() and not {".git", "vendor"} & set(path.relative_to(rendered).parts):
            assert "churn_model" not in path.read_text(encoding="utf-8"), path


def test_copier_answers_record_the_answers_version_and_template_digest_and_no_path(rendered):
    from mlops_template.scaffold.answers import template_digest
    from mlops_template.scaffold.wheel import library_version

    text = (rendered / ".copier-answers.yml").read_text()
    answers = yaml.safe_load(text)
    assert answers["project_name"] == "churn-model"
    assert answers["package_name"] == "churner"
    assert answers["mlops_version"] == library_version()
    assert answers["template_digest"] == template_digest(template_path())
    assert "_src_path" not in answers and str(template_path()) not in text and "/" not in text.split("\n", 1)[1]


def test_one_commit_and_a_clean_work_tree_without_a_git_identity(rendered):
    assert git(rendered, "rev-list", "--count", "HEAD").strip() == "1"
    assert git(rendered, "status", "--porcelain", "--untracked-files=all") == ""
    assert git(rendered, "rev-parse", "--abbrev-ref", "HEAD").strip() == "main"
    assert (
        git(rendered, "log", "-1", "--format=%an <%ae>|%s").strip()
        == "mlops <mlops@localhost>|Start project from mlops-template"
    )
    committed = sorted(git(rendered, "ls-files").splitlines())
    assert committed == expected("churner", name="churn-model", lock=True)


def test_a_configured_git_identity_is_used(tmp_path, monkeypatch):
    config = tmp_path / "gitconfig"
    config.write_text("[user]\n\tname = Ada Lovelace\n\temail = ada@example.org\n")
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(config))
    project = new_project("ada", directory=tmp_path / "ada", lock=False)
    assert git(project, "log", "-1", "--format=%an <%ae>").strip() == "Ada Lovelace <ada@example.org>"


def test_default_package_is_the_name_with_underscores(tmp_path):
    project = new_project("iris-classifier", directory=tmp_path / "iris", lock=False)
    assert project == (tmp_path / "iris").resolve()
    assert project_files(project) == expected("iris_classifier")
    assert load_config(project).package == "iris_classifier"
    assert git(project, "status", "--porcelain") == ""


def test_without_directory_renders_into_name_in_the_cwd(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, ["new", "fraud", "--no-lock"])
    assert result.exit_code == 0, result.output
    assert project_files(tmp_path / "fraud") == expected("fraud")
    assert load_config(tmp_path / "fraud").name == "fraud"


def test_an_existing_empty_folder_is_accepted(tmp_path):
    target = tmp_path / "empty"
    target.mkdir()
    result = CliRunner().invoke(main, ["new", "churn", "-d", str(target), "--no-lock"])
    assert result.exit_code == 0, result.output
    assert project_files(target) == expected("churn")


# -- what is refused ------------------------------------------------------------------------


def refused(args: list[str], message: str) -> None:
    result = CliRunner().invoke(main, ["new", *args])
    assert result.exit_code == 1, result.output
    assert result.output.strip() == f"Error: {message}"
    assert "Traceback" not in result.output
    assert isinstance(result.exception, SystemExit)


def test_refuses_a_folder_that_is_not_empty(tmp_path):
    target = tmp_path / "busy"
    target.mkdir()
    (target / "notes.txt").write_text("keep me")
    refused(
        ["churn", "-d", str(target)], f"{target} already exists and is not empty; choose a new folder with --directory"
    )
    assert [p.name for p in target.iterdir()] == ["notes.txt"]
    assert (target / "notes.txt").read_text() == "keep me"


def test_refuses_a_path_that_is_a_file(tmp_path):
    target = tmp_path / "file"
    target.write_text("x")
    result = CliRunner().invoke(main, ["new", "churn", "-d", str(target)])
    assert result.exit_code != 0 and "Traceback" not in result.output
    assert target.read_text() == "x"


_NAME_HINT = (
    "is invalid; use lower-case letters, digits and single '-' or '_' between them, "
    "starting with a letter (e.g. churn or iris-classifier)"
)


@pytest.mark.parametrize("name", ["Churn", "1abc", "a b", "churn--x", "churn-", "-churn", "churn.x", ""])
def test_refuses_invalid_project_names(tmp_path, monkeypatch, name):
    monkeypatch.chdir(tmp_path)
    refused(["-d", str(tmp_path / "p"), "--", name], f"project name '{name}' {_NAME_HINT}")
    assert list(tmp_path.iterdir()) == [tmp_path / "home"]  # nothing written


@pytest.mark.parametrize("package", ["json", "os", "test", "mlflow", "pandas", "mlops_template", "click", "yaml"])
def test_refuses_a_package_that_would_shadow_a_module(tmp_path, package):
    refused(
        ["churn", "-d", str(tmp_path / "p"), "--package", package],
        f"package name '{package}' would shadow an existing module; choose another with --package",
    )
    assert not (tmp_path / "p").exists()


def test_refuses_a_name_whose_default_package_would_shadow_a_module(tmp_path):
    refused(
        ["json", "-d", str(tmp_path / "p")],
        "package name 'json' would shadow an existing module; choose another with --package",
    )
    assert not (tmp_path / "p").exists()


@pytest.mark.parametrize("package", ["churn-model", "1churn", "Churn", "class", "churn model", "churn.model"])
def test_refuses_a_package_that_is_not_a_lowercase_identifier(tmp_path, package):
    refused(
        ["churn", "-d", str(tmp_path / "p"), "--package", package],
        f"package name '{package}' is not a lower-case Python identifier; use letters, digits and '_' (e.g. churn_model)",
    )
    assert not (tmp_path / "p").exists()


def test_library_raises_project_error_before_writing(tmp_path):
    with pytest.raises(ProjectError, match="project name 'Bad' is invalid"):
        new_project("Bad", directory=tmp_path / "p")
    with pytest.raises(ProjectError, match="would shadow"):
        new_project("ok", directory=tmp_path / "p", package="json")
    assert not (tmp_path / "p").exists()


@pytest.mark.parametrize("existed", [False, True])
def test_a_failure_after_rendering_leaves_nothing_behind(tmp_path, monkeypatch, existed):
    """git fails in the new project's folder only, where `mlops new` records the project after rendering it.

    copier runs git too (to look at the template), through plumbum, which copies PATH once, when first
    imported: a git failing everywhere would fail copier instead whenever this test is the process's first
    to render a project. So every other git command goes to the real git.
    """
    target = tmp_path / "churn"
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    git = fake_bin / "git"
    git.write_text(
        "#!/bin/sh\n"
        f'case "$(pwd -P)" in {shlex.quote(str(target.resolve()))}|{shlex.quote(str(target.resolve()))}/*)\n'
        "  echo 'fatal: disk quota exceeded' >&2; exit 128;;\n"
        "esac\n"
        f'exec {shlex.quote(shutil.which("git"))} "$@"\n'
    )
    git.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake_bin}{os.pathsep}{os.environ['PATH']}")
    if existed:
        target.mkdir()

    result = CliRunner().invoke(main, ["new", "churn", "-d", str(target), "--no-lock"])

    assert result.exit_code == 1
    assert "git could not record the new project" in result.output and "disk quota exceeded" in result.output
    assert (list(target.iterdir()) == []) if existed else not target.exists()


def test_the_next_hint_quotes_a_path_as_a_shell_reads_it(tmp_path):
    target = tmp_path / "my proj & co's" / "churn"
    result = CliRunner().invoke(main, ["new", "churn", "--directory", str(target), "--no-lock"])
    assert result.exit_code == 0, result.output
    [hint] = [line for line in result.output.splitlines() if line.startswith("Next: ")]
    command = hint.removeprefix("Next: ")
    assert shlex.split(command) == ["cd", str(target), "&&", "mlops", "run"]
