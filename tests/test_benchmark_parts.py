"""`benchmarks/scale.py` names the functions whose time makes each part of a step: each must still exist.

A part whose function was moved or renamed would read 0.00 s and pass its time to "user code" unnoticed.
"""

from __future__ import annotations

import ast
import importlib.util
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def _parts() -> dict[str, tuple[tuple[str, ...], ...]]:
    sys.path.insert(0, str(BENCHMARKS))  # scale.py imports its sibling _commands
    try:
        spec = importlib.util.spec_from_file_location("scale_benchmark", BENCHMARKS / "scale.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(BENCHMARKS))
    return module.PARTS


def _defined(path: Path) -> set[str]:
    return {
        n.name for n in ast.walk(ast.parse(path.read_text())) if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)
    }


def _source(relative: str) -> Path:
    """Where `package/module.py` lives in this environment (the project's own source or an installed package)."""
    package = relative.split("/", 1)[0]
    root = Path(importlib.util.find_spec(package).origin).parent.parent
    return root / relative


@pytest.mark.parametrize(
    ("part", "entry"), [(part, entry) for part, entries in _parts().items() for entry in entries], ids=str
)
def test_each_part_of_the_breakdown_names_a_function_that_exists(part, entry):
    relative, function, *caller = entry
    source = _source(relative)
    assert source.is_file(), f"{part}: {relative} does not exist"
    assert function in _defined(source), f"{part}: {relative} defines no {function}"
    if caller:  # (file, function, only when called by)
        assert any(caller[0] in _defined(p) for p in _source("mlops_template/__init__.py").parent.rglob("*.py"))
