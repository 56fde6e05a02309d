"""Running the measured commands: each a separate process, timed by wall clock from the benchmark."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path


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
