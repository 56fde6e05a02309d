"""Layers depend downwards only: the library never imports the `mlops` command line."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import mlops_template
from mlops_template import Pipeline

PACKAGE = Path(mlops_template.__file__).parent
# The command line itself and `python -m mlops_template`; the template holds project code, not library code.
# `Pipeline.main` is the run command (lazily); the store reader quiets MLflow's loggers as the CLI does.
ALLOWED = {PACKAGE / "__main__.py", PACKAGE / "pipeline" / "pipeline.py", PACKAGE / "tracking" / "reader.py"}
LIBRARY = sorted(
    p
    for p in PACKAGE.rglob("*.py")
    if p not in ALLOWED
    and not p.is_relative_to(PACKAGE / "cli")
    and not p.is_relative_to(PACKAGE / "scaffold" / "template")
)


def imported_modules(path: Path, package_dir: Path = PACKAGE) -> set[str]:
    """Every module `path` (inside `package_dir`) imports, as an absolute dotted name, relative imports resolved."""
    package = list(path.relative_to(package_dir.parent).parts[:-1])  # the package `path` belongs to
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module.split(".") if node.module else []
            if node.level:
                base = package[: len(package) - (node.level - 1)] + base
            found.add(".".join(base))
            found.update(".".join([*base, alias.name]) for alias in node.names)
    return found


def test_the_library_is_found():
    names = {p.name for p in LIBRARY}
    assert {"context.py", "runner.py", "connect.py", "base.py"} <= names
    assert "main.py" not in names


@pytest.mark.parametrize("path", LIBRARY, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_library_module_imports_the_cli(path):
    cli = [m for m in imported_modules(path) if m == "mlops_template.cli" or m.startswith("mlops_template.cli.")]
    assert cli == [], f"{path.relative_to(PACKAGE)} imports the CLI; move what it needs into a library module"


@pytest.mark.parametrize(
    ("source", "where"),
    [
        ("from .cli import run_command", "pipeline.py"),
        ("from . import cli", "runner.py"),
        ("from ..cli import main", "storage/base.py"),
        ("import mlops_template.cli", "tracking.py"),
        ("def f():\n    from mlops_template.cli.main import entry", "ui.py"),
    ],
)
def test_the_check_sees_every_way_of_importing_the_cli(tmp_path, source, where):
    # The same resolution on a module that does import it, so the check above can fail.
    module = tmp_path / "mlops_template" / where
    module.parent.mkdir(parents=True, exist_ok=True)
    module.write_text(source + "\n", encoding="utf-8")
    assert any(m.startswith("mlops_template.cli") for m in imported_modules(module, tmp_path / "mlops_template"))


def test_pipeline_main_is_the_run_command_with_one_line_errors(tiny_project, monkeypatch, capsys):
    def only(ctx):
        pass

    monkeypatch.chdir(tiny_project)
    with pytest.raises(SystemExit) as exit_info:
        Pipeline([only]).main(["--step", "nope"])
    assert exit_info.value.code == 1
    err = capsys.readouterr().err
    assert err.strip() == "Error: unknown step 'nope'; valid: only"
