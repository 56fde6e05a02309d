"""The README documents every command and option, so docs cannot silently drift from the CLI."""

from pathlib import Path

import click
import pytest

from mlops_template.cli import main

README = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")


def _commands(group=main, prefix=""):
    """Every runnable command by its full name (`data ls`), subcommands of groups included."""
    for name, command in sorted(group.commands.items()):
        if isinstance(command, click.Group):
            yield from _commands(command, f"{prefix}{name} ")
        else:
            yield f"{prefix}{name}", command


COMMANDS = dict(_commands())


def test_groups_have_commands():
    assert {"data ls", "data show", "data diff", "data add", "data get", "run"} <= set(COMMANDS)


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_command_is_in_the_readme_table(name):
    assert f"| `mlops {name}" in README


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
def test_every_long_option_is_documented(command, option):
    assert option in README, f"`mlops {command} {option}` is not mentioned in README.md"
