"""Move the flat `mlops_template` modules into packages by layer and rewrite every import of them.

Kept so that a branch made before the move can be brought onto it: run it on that branch
(`.venv/bin/python scripts/layout.py`, whose ruff sorts the imports again), commit, then merge. Modules already at their new home are left alone.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "mlops_template"

# old module (under mlops_template) → new dotted home
MOVES = {
    "uris": "redact",
    "aws": "config.aws",
    "config": "config.load",
    "params": "config.params",
    "environ": "config.environ",
    "dag_settings": "config.dag",
    "resources": "config.resources",
    "datasets": "data.hashing",
    "tables": "data.tables",
    "manifest": "data.manifest",
    "snapshots": "data.snapshots",
    "datadiff": "data.diff",
    "predictions": "data.predictions",
    "tracking": "tracking.connect",
    "store_reader": "tracking.reader",
    "scoring": "models.scoring",
    "targets": "models.targets",
    "flavors": "models.flavors",
    "requirements": "models.pins",
    "registry": "models.registry",
    "gate": "models.gate",
    "promotion": "models.promotion",
    "pipeline": "pipeline.pipeline",
    "context": "pipeline.context",
    "runner": "pipeline.runner",
    "pipeline_runs": "pipeline.coordination",
    "provenance": "pipeline.provenance",
    "replay": "pipeline.replay",
    "project": "pipeline.loader",
    "runs": "lineage.listing",
    "lineage": "lineage.show",
    "reproduce": "lineage.reproduce",
    "dag": "scheduler.airflow",
    "scaffold": "scaffold.new",
    "vendor": "scaffold.vendor",
    "wheel": "scaffold.wheel",
    "lock": "scaffold.lock",
    "cli": "cli.main",
    "cli_lineage": "cli.lineage",
    "entrypoint": "cli.run",
    "terminal": "cli.output",
    "ui": "cli.ui",
}
PACKAGES = {
    "config": "`mlops.toml`: its schema and loading, params, environments, AWS profiles, DAG and resource settings.",
    "data": "Tables as content-addressed snapshots: hashing, reading, manifests, diffs, predictions.",
    "tracking": "MLflow: connecting, store failures, tag names, `mlflow run` glue, reading the store.",
    "models": "Scoring, targets, flavours, the registry and its gate, promotion between environments.",
    "pipeline": "Steps, their context, the runner, cross-process coordination, provenance and replay.",
    "lineage": "Questions about past runs: listing and naming them, show, diff, reproduce.",
    "scheduler": "Schedulers that run a project's steps: the Airflow DAG.",
    "scaffold": "New projects: rendering the template, vendoring this library's wheel, locking.",
    "cli": "The `mlops` command line: parses, calls one library function, prints.",
}
TEXT_SUFFIXES = {".py", ".md", ".toml", ".jinja", ".sh", ".txt", ".yml", ".yaml"}


def old_package_of(path: Path) -> list[str]:
    return ["mlops_template", *path.relative_to(PACKAGE).parts[:-1]]


def absolute_imports(text: str, package: list[str]) -> str:
    """`from .x import y` → `from mlops_template.x import y`, resolved against the module's old package."""

    def repl(match: re.Match[str]) -> str:
        indent, dots, module, rest = match.groups()
        base = package[: len(package) - (len(dots) - 1)]
        target = ".".join([*base, module] if module else base)
        return f"{indent}from {target} import {rest}"

    return re.sub(r"^(\s*)from (\.+)([\w.]*) import (.*)$", repl, text, flags=re.M)


def split_package_imports(text: str) -> str:
    """`from mlops_template import tracking, Pipeline` → one import per moved module, the rest kept."""

    def repl(match: re.Match[str]) -> str:
        indent, names = match.group(1), match.group(2)
        if names.strip().startswith("("):
            return match.group(0)
        names, hash_, comment = names.partition("#")
        comment = f"  #{comment}" if hash_ else ""
        kept, lines = [], []
        for item in (n.strip() for n in names.split(",")):
            name, _, alias = (part.strip() for part in item.partition(" as "))
            if name in MOVES:
                parent, _, base = f"mlops_template.{MOVES[name]}".rpartition(".")
                bound = alias or name
                lines.append(f"{indent}from {parent} import {base}" + (f" as {bound}" if bound != base else ""))
            else:
                kept.append(item)
        if kept:
            lines.insert(0, f"{indent}from mlops_template import {', '.join(kept)}")
        return "\n".join(lines) + comment

    return re.sub(r"^(\s*)from mlops_template import (.+)$", repl, text, flags=re.M)


def dotted_names(text: str) -> str:
    """`mlops_template.tracking` → `mlops_template.tracking.connect`, in imports and strings alike."""
    pattern = re.compile(r"\bmlops_template\.(" + "|".join(sorted(MOVES, key=len, reverse=True)) + r")\b(?![\w/])")
    return pattern.sub(lambda m: f"mlops_template.{MOVES[m.group(1)]}", text)


def rewrite(path: Path, *, in_package: bool) -> None:
    text = path.read_text(encoding="utf-8")
    new = text
    if in_package and path.suffix == ".py":
        new = absolute_imports(new, old_package_of(path))
    new = dotted_names(new)
    if path.suffix in {".py", ".jinja", ".md"}:
        new = split_package_imports(new)
    new = new.replace("src/mlops_template/template", "src/mlops_template/scaffold/template")
    if new != text:
        path.write_text(new, encoding="utf-8")


def git(*args: str) -> None:
    subprocess.run(["git", *args], cwd=ROOT, check=True)


def main() -> int:
    if not (PACKAGE / "tracking.py").exists():
        print("already in packages by layer; nothing to do")
        return 0
    template = PACKAGE / "template"
    library = [p for p in PACKAGE.rglob("*.py") if not p.is_relative_to(template)]
    others = [
        p
        for folder in ("tests", "benchmarks", "scripts")
        for p in (ROOT / folder).rglob("*")
        if p.is_file() and p.suffix in TEXT_SUFFIXES and p != Path(__file__).resolve()
    ]
    others += [ROOT / "README.md", ROOT / "pyproject.toml"]
    others += [p for p in template.rglob("*") if p.is_file() and p.suffix in TEXT_SUFFIXES]
    for path in library:
        rewrite(path, in_package=True)
    for path in others:
        rewrite(path, in_package=False)

    init = PACKAGE / "__init__.py"
    text = init.read_text(encoding="utf-8")
    for old, new in MOVES.items():
        text = text.replace(f': "{old}",', f': "{new}",')
    init.write_text(text, encoding="utf-8")

    scaffold = PACKAGE / "scaffold.py"
    scaffold.write_text(
        scaffold.read_text(encoding="utf-8").replace(
            'files("mlops_template") / "template"', 'files("mlops_template.scaffold") / "template"'
        ),
        encoding="utf-8",
    )
    wheel = PACKAGE / "wheel.py"
    wheel.write_text(
        wheel.read_text(encoding="utf-8").replace(
            "return Path(__file__).resolve().parent\n", "return Path(__file__).resolve().parents[1]\n"
        ),
        encoding="utf-8",
    )

    for name, doc in PACKAGES.items():
        folder = PACKAGE / name
        folder.mkdir(exist_ok=True)
        (folder / "__init__.py").write_text(f'"""{doc}"""\n', encoding="utf-8")
        git("add", str(folder / "__init__.py"))
    git("mv", str(template), str(PACKAGE / "scaffold" / "template"))
    for old, new in MOVES.items():
        git("mv", str(PACKAGE / f"{old}.py"), str(PACKAGE / (new.replace(".", "/") + ".py")))
    # Imports sorted again where the new names changed their order; the template is the team's code, not ours.
    ruff = [sys.executable, "-m", "ruff"]
    subprocess.run(
        [*ruff, "check", "--select", "I", "--fix", "--quiet", "src", "tests", "benchmarks", "scripts"], cwd=ROOT
    )
    subprocess.run([*ruff, "format", "--quiet", "src", "tests", "benchmarks", "scripts"], cwd=ROOT)
    git("add", "-A", str(ROOT / "src"), str(ROOT / "tests"), str(ROOT / "benchmarks"), str(ROOT / "scripts"))
    git("add", str(ROOT / "README.md"), str(ROOT / "pyproject.toml"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
