"""How fast does a command give up on a store that cannot be used, against the same command on one that can?

A project with one step and three environments: `local` (an SQLite store: the baseline), `closed`
(a tracking server URL on a port nobody listens on) and `nodb` (PostgreSQL on a port nobody listens on,
which MLflow's own engine would retry for minutes). N rounds (default 5), interleaved, each command as
its own process timed by wall clock from here:

  mlops runs -e local      (the baseline: start-up and one read of a working store)
  mlops runs -e closed
  mlops runs -e nodb
  mlops run  -e closed     (stops before any run is recorded)

It prints every time, the medians, and each failing command's median less the baseline's against the
target: a dead store costs at most 5 s more than a working one.

    uv run python benchmarks/fail_fast.py [--runs 5] [--keep]

It exits 0 whatever the figures (it is a measurement); 1 if a command does not fail as it should.
"""

from __future__ import annotations

import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

from _commands import MLOPS, benchmark_options, command_env, require_mlops, work_folder

EXTRA_TARGET = 5.0
STEP = "from mlops_template import Pipeline\n\n\ndef only(ctx):\n    pass\n\n\npipeline = Pipeline([only])\n"


def free_port() -> int:
    with socket.socket() as s:  # nothing listens on it once closed
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_project(root: Path) -> None:
    (root / "src" / "fastfail").mkdir(parents=True)
    (root / "src" / "fastfail" / "__init__.py").write_text("")
    (root / "src" / "fastfail" / "main.py").write_text(STEP)
    (root / "mlops.toml").write_text(
        '[project]\nname = "fastfail"\npackage = "fastfail"\n\n[model]\ngate = { min = false }\n\n'
        '[environments.local]\nstorage = "data"\ntracking_uri = "sqlite:///mlruns.db"\n\n'
        f'[environments.closed]\nstorage = "data"\ntracking_uri = "http://127.0.0.1:{free_port()}"\n\n'
        f'[environments.nodb]\nstorage = "data"\n'
        f'tracking_uri = "postgresql+psycopg2://ml:pw@127.0.0.1:{free_port()}/mlflow"\n'
    )


def timed(args: list[str], root: Path, *, fails: bool) -> float:
    started = time.perf_counter()
    done = subprocess.run(
        [str(MLOPS), *args, "--project", str(root)], env=command_env(), capture_output=True, text=True, timeout=600
    )
    seconds = time.perf_counter() - started
    if (done.returncode != 0) != fails:
        print(
            f"UNEXPECTED (exit {done.returncode}): mlops {' '.join(args)}\n{done.stdout}{done.stderr}", file=sys.stderr
        )
        sys.exit(1)
    return seconds


def main() -> None:
    parser = benchmark_options(__doc__, runs=5, runs_help="timed rounds")
    args = parser.parse_args()
    require_mlops(MLOPS)
    cases = {
        "runs -e local (baseline)": (["runs", "-e", "local"], False),
        "runs -e closed": (["runs", "-e", "closed"], True),
        "runs -e nodb": (["runs", "-e", "nodb"], True),
        "run -e closed": (["run", "-e", "closed"], True),
    }
    with work_folder("fail-fast", keep=args.keep) as work:
        root = work / "fastfail"
        make_project(root)
        for command, fails in cases.values():  # warm-up: bytecode caches, the SQLite store's tables
            timed(command, root, fails=fails)
        times: dict[str, list[float]] = {name: [] for name in cases}
        for _ in range(args.runs):
            for name, (command, fails) in cases.items():
                times[name].append(timed(command, root, fails=fails))
    base = statistics.median(times["runs -e local (baseline)"])
    for name, values in times.items():
        median = statistics.median(values)
        line = f"{name:28s} median {median:5.2f} s  ({', '.join(f'{v:.2f}' for v in values)})"
        if not name.endswith("(baseline)"):
            extra = median - base
            verdict = "PASS" if extra <= EXTRA_TARGET else "FAIL"
            line += f"  +{extra:.2f} s over the baseline: {verdict} (target <= {EXTRA_TARGET:.0f} s)"
        print(line)


if __name__ == "__main__":
    main()
