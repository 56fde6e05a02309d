"""Layers depend downwards only, checked by import-linter with the contracts in pyproject.toml.

`scripts/test.sh` runs `lint-imports` on the package; these tests show the contracts hold now and
that they fail on each kind of import they exist to stop, so a contract that no longer bites is seen.
"""

from __future__ import annotations

import ast
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import mlops_template
from mlops_template import Pipeline

PACKAGE = Path(mlops_template.__file__).parent
PYPROJECT = PACKAGE.parents[1] / "pyproject.toml"
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"


def lint(package_parent: Path, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """Run lint-imports with the project's contracts on the package found under `package_parent`."""
    config = tmp_path / "contracts.toml"
    shutil.copyfile(PYPROJECT, config)
    return subprocess.run(
        [str(LINT_IMPORTS), "--config", str(config), "--no-cache"],
        cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(package_parent)},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_package_keeps_every_contract(tmp_path):
    result = lint(PACKAGE.parent, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


@pytest.mark.parametrize(
    ("module", "source", "named"),
    [
        ("storage/base.py", "def f():\n    from mlops_template.cli import main\n", "mlops_template.storage.base"),
        ("config/params.py", "from mlops_template.models import registry\n", "mlops_template.config.params"),
        ("tracking/failures.py", "import mlops_template.pipeline.runner\n", "mlops_template.tracking.failures"),
        ("lineage/show.py", "from mlops_template.scheduler import airflow\n", "mlops_template.lineage.show"),
        ("storage/local.py", "import pandas\n", "mlops_template.storage.local"),
        ("data/__init__.py", "import mlflow\n", "mlops_template.data"),
    ],
    ids=["lazy-upward", "config-to-models", "tracking-to-pipeline", "sibling-layers", "storage-pandas", "init-mlflow"],
)
def test_each_contract_fails_on_the_import_it_forbids(tmp_path, module, source, named):
    copy = tmp_path / "src"
    shutil.copytree(PACKAGE, copy / "mlops_template", ignore=shutil.ignore_patterns("template", "__pycache__"))
    target = copy / "mlops_template" / module
    target.parent.mkdir(parents=True, exist_ok=True)
    with target.open("a", encoding="utf-8") as file:
        file.write("\n" + source)
    result = lint(copy, tmp_path)
    assert result.returncode != 0
    assert named in result.stdout, result.stdout


def test_pipeline_main_is_the_run_command_with_one_line_errors(tiny_project, monkeypatch, capsys):
    def only(ctx):
        pass

    monkeypatch.chdir(tiny_project)
    with pytest.raises(SystemExit) as exit_info:
        Pipeline([only]).main(["--step", "nope"])
    assert exit_info.value.code == 1
    err = capsys.readouterr().err
    assert err.strip() == "Error: unknown step 'nope'; valid: only"


_TAG_LITERAL = re.compile(r"^(mlops\.[a-z_]+\.?|mlflow\.(parentRunId|note\.content|data\.context|runName|user))$")


def tag_literals(source: str) -> list[str]:
    """String constants that are whole tag names (`mlops.toml` is a file, not a tag)."""
    return [
        node.value
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and _TAG_LITERAL.match(node.value)
        and node.value != "mlops.toml"
    ]


def test_every_tag_name_is_defined_in_tracking_tags_only():
    assert tag_literals('x = {"mlops.step": 1, "mlflow.parentRunId": 2}\n"""mlops.step in a sentence"""') == [
        "mlops.step",
        "mlflow.parentRunId",
    ]
    tags = PACKAGE / "tracking" / "tags.py"
    found = {
        str(path.relative_to(PACKAGE)): literals
        for path in sorted(PACKAGE.rglob("*.py"))
        if path != tags and "template" not in path.relative_to(PACKAGE).parts
        if (literals := tag_literals(path.read_text(encoding="utf-8")))
    }
    assert found == {}, "import these names from mlops_template.tracking.tags"
    assert len(tag_literals(tags.read_text(encoding="utf-8"))) >= 30


_PROCESS_CALLS = {"run", "call", "check_call", "check_output", "Popen", "system", "getoutput", "getstatusoutput"}


def git_calls(source: str) -> list[int]:
    """Lines that start a process whose command is git: `subprocess.run(["git", ...])`, `Popen(("git",))`, `os.system("git …")`."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Call) or not node.args:
            continue
        name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", None)
        if name not in _PROCESS_CALLS:
            continue
        command = node.args[0]
        first = command.elts[0] if isinstance(command, ast.List | ast.Tuple) and command.elts else command
        if isinstance(first, ast.Constant) and isinstance(first.value, str) and first.value.split(" ")[0] == "git":
            found.append(node.lineno)
    return found


def test_only_vcs_runs_git():
    sample = (
        "import subprocess\nfrom subprocess import Popen\n"
        'subprocess.run(["git", "status"], cwd=".")\n'
        'Popen(("git", "log"))\n'
        'subprocess.run(["uv", "lock"])\n'
        'os.system("git fetch")\n'
        'print(["git", "status"])\n'
    )
    assert git_calls(sample) == [3, 4, 6]
    vcs = PACKAGE / "vcs.py"
    found = {
        str(path.relative_to(PACKAGE)): lines
        for path in sorted(PACKAGE.rglob("*.py"))
        if path != vcs and "template" not in path.relative_to(PACKAGE).parts
        if (lines := git_calls(path.read_text(encoding="utf-8")))
    }
    assert found == {}, "run git through mlops_template.vcs"
    assert git_calls(vcs.read_text(encoding="utf-8"))  # the scan sees vcs.py's own call
