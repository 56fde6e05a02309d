"""The storage seam only moves bytes: no module of `storage/` imports hashing, snapshots, manifests or MLflow."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import mlops_template.storage

STORAGE = Path(mlops_template.storage.__file__).parent
FORBIDDEN = {
    "blake3",
    "hashlib",
    "mlflow",
    "mlops_template.data.hashing",
    "mlops_template.data.snapshots",
    "mlops_template.data.manifest",
    "mlops_template.data.diff",
    "mlops_template.tracking.connect",
    "mlops_template.models.registry",
    "mlops_template.pipeline.context",
    "mlops_template.pipeline.runner",
    "mlops_template.pipeline.pipeline",
    "mlops_template.cli.main",
}


def imported_modules(source: str, module: str) -> set[str]:
    """Every module a source file imports, at the top or inside a function, with relative imports resolved."""
    package = module.rsplit(".", 1)[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package.rsplit(".", node.level - 1)[0] if node.level else ""
            name = ".".join(part for part in (base, node.module) if part)
            found.add(name)
            found.update(f"{name}.{alias.name}" for alias in node.names)  # `from .. import datasets`
    return found


def forbidden(imported: set[str]) -> set[str]:
    return {name for name in imported if any(name == f or name.startswith(f + ".") for f in FORBIDDEN)}


def test_the_checker_sees_relative_lazy_and_package_imports():
    source = (
        "from ..datasets import digest_file\n"
        "def f():\n    import blake3\n"
        "from .. import snapshots\n"
        "from .base import Storage\n"
    )
    imported = imported_modules(source, "mlops_template.storage.local")
    assert forbidden(imported) == {
        "mlops_template.data.hashing",
        "mlops_template.data.hashing.digest_file",
        "blake3",
        "mlops_template.data.snapshots",
    }
    assert "mlops_template.storage.base" in imported


@pytest.mark.parametrize("path", sorted(STORAGE.glob("*.py")), ids=lambda p: p.name)
def test_storage_modules_import_no_hashing_snapshots_or_mlflow(path):
    module = f"mlops_template.storage.{path.stem}" if path.stem != "__init__" else "mlops_template.storage.__init__"
    imported = imported_modules(path.read_text(encoding="utf-8"), module)
    assert imported, f"{path.name}: no imports found; is the checker reading the right files?"
    assert forbidden(imported) == set(), f"{path.name} reaches above the storage seam"


def test_every_storage_module_is_checked():
    assert {p.name for p in STORAGE.glob("*.py")} >= {"__init__.py", "base.py", "local.py", "s3.py"}
