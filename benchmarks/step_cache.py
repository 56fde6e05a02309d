"""What does a second run of an unchanged pipeline cost, with every step reused from the first?

Two projects rendered with `mlops new`: the template's iris sample, and the same template with a
1,000,000-row table of 9 columns in data/raw (`scale.py`'s synthetic table). For each, N rounds
(default 5), interleaved, each command its own process timed by wall clock from here:

  full     `mlops run --no-cache`: every step does its work (the first run of a pipeline)
  cached   `mlops run`: nothing changed since, every step is reused
  floor    (iris only) a Python that imports MLflow and lists the project's store: what any command
           that reads the store pays before it does anything

It prints every time, the medians and the targets: on 1 M rows, cached <= 20 % of full; on iris,
cached <= floor + 1 s.

    uv run python benchmarks/step_cache.py [--runs 5] [--rows 1000000] [--keep]

It exits 0 whatever the figures (it is a measurement); 1 if a command fails or a step is not reused.
"""

from __future__ import annotations

import re
import statistics
import sys
from pathlib import Path

import scale
from _commands import MLOPS, benchmark_options, command_env, new_project, require_mlops, timed, work_folder

PYTHON = Path(sys.executable)
SHARE_TARGET = 0.20  # cached / full on the large table
FLOOR_MARGIN = 1.0  # seconds over the import floor on iris
FLOOR = (
    "import mlflow\n"
    "mlflow.MlflowClient('sqlite:///mlruns.db').search_experiments()\n"  # MLflow and its store opened, nothing run
)
STEP_LINE = re.compile(r"^\s+✓ (\w+)\s+[\d.]+ s\s*(.*)$", re.M)


def main() -> None:
    parser = benchmark_options(__doc__, runs=5, runs_help="timed runs of each")
    parser.add_argument("--rows", type=int, default=1_000_000)
    args = parser.parse_args()
    require_mlops(MLOPS)
    env = command_env()
    with work_folder("step-cache", keep=args.keep) as work:
        iris = work / "iris"
        new_project("iris", iris, env)
        table = scale.synthetic_table(args.rows)
        large = scale.render_project(work / "large", table, env)
        print(f"{args.rows:,} rows: {table.name}, {table.stat().st_size / 1e6:.0f} MB")
        results = {name: {"full": [], "cached": [], "floor": []} for name in ("iris", "large")}
        for project in (iris, large):  # warm-up: the store created, bytecode written
            timed([str(MLOPS), "run", "--no-cache"], project, env)
        for i in range(1, args.runs + 1):
            for name, project in (("iris", iris), ("large", large)):
                full, _ = timed([str(MLOPS), "run", "--no-cache"], project, env)
                cached, out = timed([str(MLOPS), "run"], project, env)
                check_all_reused(out, name)
                results[name]["full"].append(full)
                results[name]["cached"].append(cached)
                line = f"run {i:>2} {name:<6} full {full:7.2f} s   cached {cached:6.2f} s"
                if name == "iris":
                    floor, _ = timed([str(PYTHON), "-c", FLOOR], project, env)
                    results[name]["floor"].append(floor)
                    line += f"   floor {floor:6.2f} s"
                print(line)
        report(results)


def check_all_reused(stdout: str, name: str) -> None:
    """Exit 1 unless every step of the run says `cached (run …)`: a run that worked measured the wrong thing."""
    steps = STEP_LINE.findall(stdout)
    if not steps or any(not note.startswith("cached (run ") for _, note in steps):
        print(f"FAILED: {name}: the second run did not reuse every step:\n{stdout}", file=sys.stderr)
        sys.exit(1)


def report(results: dict[str, dict[str, list[float]]]) -> None:
    median = {name: {k: statistics.median(v) for k, v in r.items() if v} for name, r in results.items()}
    large, iris = median["large"], median["iris"]
    share = large["cached"] / large["full"]
    print()
    print(
        f"large  median full {large['full']:7.2f} s  cached {large['cached']:6.2f} s  cached/full {share:5.2f}", end=""
    )
    print(f"  target <= {SHARE_TARGET:.2f}: {'PASS' if share <= SHARE_TARGET else 'FAIL'}")
    over = iris["cached"] - iris["floor"]
    print(
        f"iris   median full {iris['full']:7.2f} s  cached {iris['cached']:6.2f} s  floor {iris['floor']:6.2f} s",
        end="",
    )
    print(
        f"  cached - floor {over:5.2f} s  target <= {FLOOR_MARGIN:.1f} s: {'PASS' if over <= FLOOR_MARGIN else 'FAIL'}"
    )


if __name__ == "__main__":
    main()
