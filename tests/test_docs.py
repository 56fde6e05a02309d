"""The READMEs' shell examples run as written, and every command and option is documented with its command.

The repository README runs in a copy of this work tree; a rendered project's README runs
in a project that `mlops new` just made. Both start at once and overlap. See
`docs_runner.py` for the markers that skip or serve a line, and why.
"""

from __future__ import annotations

import re
from pathlib import Path

import click
import docs_runner
import pytest
from click.testing import CliRunner

from mlops_template.cli.main import main

REPO = Path(__file__).resolve().parents[1]
README_PATH = REPO / "README.md"
README = README_PATH.read_text(encoding="utf-8")


def _commands(group=main, prefix=""):
    """Every runnable command by its full name (`data ls`), subcommands of groups included."""
    for name, command in sorted(group.commands.items()):
        if isinstance(command, click.Group):
            yield from _commands(command, f"{prefix}{name} ")
        else:
            yield f"{prefix}{name}", command


COMMANDS = dict(_commands())


# -- the examples run as written ---------------------------------------------------------------


@pytest.fixture(scope="module")
def readme_runs(tmp_path_factory):
    """Both READMEs' scripts, started together; a README that cannot be read holds its DocsError instead."""
    checkout = docs_runner.copy_checkout(REPO, tmp_path_factory.mktemp("checkout"))
    project = tmp_path_factory.mktemp("rendered") / "churn"
    made = CliRunner().invoke(main, ["new", "churn", "--directory", str(project), "--no-lock"])
    assert made.exit_code == 0, made.output
    runs = {}
    for key, readme, cwd, name in (
        ("repository", checkout / "README.md", checkout, "README.md"),
        ("rendered", project / "README.md", project, "rendered project's README.md"),
    ):
        try:
            runs[key] = docs_runner.Run(readme, cwd=cwd, name=name)
        except docs_runner.DocsError as exc:
            runs[key] = exc
    yield runs
    for run in runs.values():
        if isinstance(run, docs_runner.Run):
            run.stop()


def _passed(run: docs_runner.Run | docs_runner.DocsError) -> docs_runner.Result:
    if isinstance(run, docs_runner.DocsError):
        pytest.fail(str(run))
    result = run.wait()
    assert result.ok, result.explain()
    return result


def test_repository_readme_runs_as_written(readme_runs):
    result = _passed(readme_runs["repository"])
    # Every marked line was checked where it stands, not silently dropped.
    marked = [c for c in docs_runner.commands(README_PATH) if c.marker]
    assert marked and all(f"docs-runner: {c.where}: " in result.output for c in marked)


def test_rendered_project_readme_runs_as_written(readme_runs):
    _passed(readme_runs["rendered"])


# -- every command and option is documented with its command ----------------------------------


def test_groups_have_commands():
    assert {"data ls", "data show", "data diff", "data add", "data get", "run"} <= set(COMMANDS)


def _table_row(name: str) -> str | None:
    """The README table row documenting `mlops NAME` (its first cell starts with the command)."""
    rows = [line for line in README.splitlines() if re.match(rf"\|\s*`mlops {re.escape(name)}( |`)", line)]
    return rows[0] if rows else None


def _examples(name: str) -> list[docs_runner.Command]:
    """The fenced example lines of README.md that run `mlops NAME` (variables before it aside)."""
    wanted = ["mlops", *name.split()]
    found = []
    for command in docs_runner.commands(README_PATH):
        words = command.words
        while words and re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", words[0]):
            words = words[1:]
        if words[: len(wanted)] == wanted:
            found.append(command)
    return found


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_command_is_in_the_readme_table(name):
    assert _table_row(name), f"`mlops {name}` has no row in README.md's command table"


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_command_has_a_fenced_example(name):
    assert _examples(name), f"`mlops {name}` appears in no fenced shell example of README.md, so nothing runs it"


@pytest.mark.parametrize(
    ("command", "option"),
    [
        (name, opt)
        for name, cmd in sorted(COMMANDS.items())
        for p in cmd.params
        for opt in p.opts
        if opt.startswith("--") and opt not in ("--project", "--help")
    ],
)
def test_every_long_option_is_documented_with_its_command(command, option):
    places = [_table_row(command) or "", *(c.command for c in _examples(command))]
    assert any(re.search(rf"{re.escape(option)}\b", place) for place in places), (
        f"`mlops {command} {option}` is in neither `mlops {command}`'s table row nor one of its examples in README.md"
    )
