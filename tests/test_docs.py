"""The README documents every command and option, so docs cannot silently drift from the CLI."""

from pathlib import Path

import pytest

from mlops_template.cli import main

README = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")


@pytest.mark.parametrize("name", sorted(main.commands))
def test_every_command_is_in_the_readme_table(name):
    assert f"| `mlops {name}" in README


@pytest.mark.parametrize(
    ("command", "option"),
    [
        (name, opt)
        for name, cmd in sorted(main.commands.items())
        for p in cmd.params
        for opt in p.opts
        if opt.startswith("--") and opt not in ("--project", "--help")
    ],
)
def test_every_long_option_is_documented(command, option):
    assert option in README, f"`mlops {command} {option}` is not mentioned in README.md"
