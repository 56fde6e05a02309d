"""`mlops upgrade`: a newer template merged into a project, the team's edits kept, conflicts left marked.

The project is rendered by the installed library (its wheel vendored); the newer
template is a second wheel built here from the first, its README and a step's
docstring changed, under version 0.2.0.
"""

from __future__ import annotations

import subprocess
import zipfile
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from mlops_template.cli.main import main
from mlops_template.scaffold.answers import template_digest
from mlops_template.scaffold.new import new_project, template_path
from mlops_template.scaffold.wheel import library_version, write_wheel

README_LINE = "A line the new template adds to the README.\n"
OLD_DOC = '"""Obtain the raw data and clean it."""'
NEW_DOC = '"""Obtain the raw data and clean it: the new template\'s words."""'
GIT = ["git", "-c", "user.name=t", "-c", "user.email=t@localhost"]


def newer_wheel(folder: Path, version: str = "99.0.0") -> Path:
    """The installed library's wheel with its template's README and make_data docstring changed, as `version`."""
    base = write_wheel(folder / "base")
    target = folder / f"mlops_template-{version}-py3-none-any.whl"
    edits = {"project/README.md.jinja": ("\n", "\n" + README_LINE), "data/make_data.py": (OLD_DOC, NEW_DOC)}
    with zipfile.ZipFile(base) as source, zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as out:
        for info in source.infolist():
            data = source.read(info.filename)
            for suffix, (old, new) in edits.items():
                if info.filename.endswith(suffix):
                    assert old.encode() in data, suffix
                    data = data.replace(old.encode(), new.encode(), 1)
            out.writestr(info, data)
    return target


def git(root: Path, *args: str) -> str:
    return subprocess.run([*GIT, *args], cwd=root, check=True, capture_output=True, text=True).stdout


def upgrade(root: Path, *args: str):
    return CliRunner().invoke(main, ["upgrade", "--project", str(root), *args])


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return newer_wheel(tmp_path_factory.mktemp("wheels"))


@pytest.fixture
def project(tmp_path: Path) -> Path:
    return new_project("upgraded", directory=tmp_path / "upgraded", lock=False)


def make_data(root: Path) -> Path:
    return root / "src" / "upgraded" / "data" / "make_data.py"


def one_error_line(result) -> str:
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    [line] = [line for line in result.output.splitlines() if line.strip()]
    return line


def test_the_team_s_edit_and_the_template_s_change_are_both_there_and_nothing_is_committed(project, wheel):
    train = project / "src" / "upgraded" / "models" / "train_model.py"
    train.write_text(train.read_text() + "\n# the team's own note on training\n")
    git(project, "commit", "-qam", "our note")
    head = git(project, "rev-parse", "HEAD")

    result = upgrade(project, "--to", str(wheel))

    assert result.exit_code == 0, result.output
    assert "from mlops-template 0.1.0 to 99.0.0" in result.output.replace(library_version(), "0.1.0")
    assert "# the team's own note on training" in train.read_text()  # kept
    assert NEW_DOC in make_data(project).read_text() and OLD_DOC not in make_data(project).read_text()
    assert README_LINE in (project / "README.md").read_text()
    assert git(project, "rev-parse", "HEAD") == head  # nothing committed
    changed = {line[3:] for line in git(project, "status", "--porcelain").splitlines()}
    assert {"README.md", "src/upgraded/data/make_data.py", ".copier-answers.yml", "pyproject.toml"} <= changed
    assert "src/upgraded/models/train_model.py" not in changed
    # vendor/ and pyproject.toml name the new wheel, as `mlops vendor` leaves them; the answers record it.
    assert [p.name for p in (project / "vendor").glob("*.whl")] == [wheel.name]
    assert (project / "vendor" / wheel.name).read_bytes() == wheel.read_bytes()
    assert '"mlops-template==99.0.0"' in (project / "pyproject.toml").read_text()
    answers = yaml.safe_load((project / ".copier-answers.yml").read_text())
    assert answers["mlops_version"] == "99.0.0" and "_src_path" not in answers and "_commit" not in answers
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(project.parent / "unpacked", [n for n in archive.namelist() if "/scaffold/template/" in n])
    assert answers["template_digest"] == template_digest(project.parent / "unpacked/mlops_template/scaffold/template")

    git(project, "add", "--all")
    git(project, "commit", "-qm", "upgraded")
    again = upgrade(project, "--to", str(wheel))
    assert again.exit_code == 0 and "already up to date" in again.output


def test_a_conflicting_edit_is_left_with_markers_listed_and_exit_1(project, wheel):
    make_data(project).write_text(make_data(project).read_text().replace(OLD_DOC, '"""Our warehouse loader."""'))
    git(project, "commit", "-qam", "our docstring")

    result = upgrade(project, "--to", str(wheel))

    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    assert "conflict  src/upgraded/data/make_data.py" in result.output
    assert "1 files hold conflict markers" in result.output
    text = make_data(project).read_text()
    assert "<<<<<<< before updating" in text and ">>>>>>> after updating" in text
    assert '"""Our warehouse loader."""' in text and NEW_DOC in text
    assert README_LINE in (project / "README.md").read_text()  # the rest merged


def test_an_up_to_date_project_is_left_untouched(project):
    before = {p: p.read_bytes() for p in project.rglob("*") if p.is_file() and ".git" not in p.parts}

    result = upgrade(project)

    assert result.exit_code == 0, result.output
    assert f"already up to date: the project's template is mlops-template {library_version()}'s" in result.output
    assert git(project, "status", "--porcelain") == ""
    assert {p: p.read_bytes() for p in project.rglob("*") if p.is_file() and ".git" not in p.parts} == before


def test_a_dirty_work_tree_is_refused(project, wheel):
    (project / "README.md").write_text("edited, not committed\n")
    line = one_error_line(upgrade(project, "--to", str(wheel)))
    assert line.startswith(f"Error: {project} has uncommitted changes (README.md); commit or stash them")
    assert (project / "README.md").read_text() == "edited, not committed\n"


def test_no_vendored_wheel_is_refused(project, wheel):
    git(project, "rm", "-rq", "vendor")
    git(project, "commit", "-qm", "no vendor")
    line = one_error_line(upgrade(project, "--to", str(wheel)))
    assert line.startswith(f"Error: {project / 'vendor'} holds no mlops-template wheel")
    assert line.endswith("restore vendor/ from the project's history (git checkout -- vendor)")


def test_a_vendored_wheel_that_is_not_mlops_template_s_is_refused(project, wheel):
    [vendored] = (project / "vendor").glob("*.whl")
    with zipfile.ZipFile(vendored, "w") as archive:
        archive.writestr("something_else/__init__.py", "")
    git(project, "commit", "-qam", "another wheel under the name")
    line = one_error_line(upgrade(project, "--to", str(wheel)))
    assert line == f"Error: {vendored} is not an mlops-template wheel (it holds no project template)"


def test_a_to_wheel_older_than_the_project_is_refused(project, tmp_path):
    older = newer_wheel(tmp_path / "older", version="0.0.1")
    line = one_error_line(upgrade(project, "--to", str(older)))
    assert line.startswith(f"Error: {older} is mlops-template 0.0.1, older than the project's {library_version()}")
    assert "downgrades are not supported" in line
    assert git(project, "status", "--porcelain") == ""


def test_a_project_whose_answers_name_a_machine_path_is_upgraded_with_a_note(project, wheel):
    answers = project / ".copier-answers.yml"
    answers.write_text(  # as `mlops new` wrote them before: the template's absolute path, no versions
        "# Answers given to the mlops-template questions; `copier update` reads them. Do not edit by hand.\n"
        f"_src_path: {template_path()}\npackage_name: upgraded\nproject_name: upgraded\n"
    )
    git(project, "commit", "-qam", "answers as an older mlops new wrote them")

    result = upgrade(project, "--to", str(wheel))

    assert result.exit_code == 0, result.output
    notes = [line for line in result.output.splitlines() if line.startswith("Note: ")]
    assert len(notes) == 1 and "named the template by a path on the machine that made the project" in notes[0]
    assert NEW_DOC in make_data(project).read_text()
    assert str(template_path()) not in answers.read_text()
