"""Running the measured commands: each a separate process, timed by wall clock from the benchmark."""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

WORK = Path(__file__).resolve().parent / ".work"
MLOPS = Path(sys.executable).parent / "mlops"


def benchmark_options(doc: str, *, runs: int, runs_help: str) -> argparse.ArgumentParser:
    """The options every benchmark takes, `--runs` (at least 1) and `--keep`; the benchmark adds its own."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument("--runs", type=_at_least_one, default=runs, help=f"{runs_help} [default: {runs}]")
    parser.add_argument("--keep", action="store_true", help="keep the work folder (under benchmarks/.work/)")
    return parser


def _at_least_one(text: str) -> int:
    number = int(text)
    if number < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return number


def require_mlops(mlops: Path) -> None:
    """Exit with the fix when the benchmark runs outside the project's venv (no `mlops` beside its Python)."""
    if not mlops.exists():
        sys.exit(f"no `mlops` next to {sys.executable}; run this with the project's venv (uv run python ...)")


@contextmanager
def work_folder(name: str, *, keep: bool) -> Iterator[Path]:
    """A fresh folder under benchmarks/.work/ (the machine is printed with it), removed afterwards unless `keep`."""
    WORK.mkdir(exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=WORK))
    print(f"python {sys.version.split()[0]} ({sys.executable}), {os.cpu_count()} CPUs; work folder {work}")
    try:
        yield work
    finally:
        if keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


def command_env(**extra: str) -> dict[str, str]:
    """This process's environment as a user's machine has it: bytecode cached (PYTHONDONTWRITEBYTECODE
    removed, or every run would time Python compiling MLflow), and no telemetry sent over a closed network."""
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["MLFLOW_DISABLE_TELEMETRY"] = "true"
    env.update(extra)
    return env


def timed(cmd: list[str], cwd: Path, env: dict[str, str], *, sync: bool = False) -> tuple[float, str]:
    """Run `cmd` to completion; its wall-clock seconds and stdout. `sync=True` flushes dirty pages first (untimed)."""
    if sync:
        os.sync()
    started = time.perf_counter()
    result = run_checked(cmd, cwd, env)
    return time.perf_counter() - started, result.stdout


def run_checked(cmd: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run `cmd`; on failure print its output and exit 1 (a benchmark whose command fails measured nothing)."""
    result = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        print(f"FAILED (exit {result.returncode}): {' '.join(cmd)}  in {cwd}", file=sys.stderr)
        print(result.stdout, result.stderr, sep="\n", file=sys.stderr)
        sys.exit(1)
    return result


def new_project(name: str, target: Path, env: dict[str, str]) -> Path:
    """`mlops new NAME --no-lock --directory TARGET`: a freshly rendered project to measure in."""
    run_checked([str(MLOPS), "new", name, "--no-lock", "--directory", str(target)], target.parent, env)
    return target
