"""How much slower is a tracked `mlops run` than the same work as a bare script?

Renders a project with `mlops new`, then alternately runs, each as its own
process timed by wall clock from here:

  (a) the rendered project's full pipeline: `mlops run`
      (make_data -> feat_data -> train_model -> predict, tracked in MLflow);
  (b) `bare_iris.py`: the same pandas/scikit-learn work with no tracking
      (the same `Pipeline` of imputers, one-hot encoder and gradient-boosted
      trees; with the gate's `beat_champion`, the champion scored on the
      held-out rows it did not train on).

It does so for both settings of the gate's `beat_champion`, each in its own
project: `false`, where every timed run does the full work (log the model,
register a version, move `champion`, export it, load the champion, predict),
and `true` (the shipped setting), where every run after the first scores the
champion on the same rows, does not beat it and registers nothing. It prints
every run's time, the medians and the ratio a/b against the target
(a/b <= 2.0 in both).

One untimed warm-up of each comes first: the first `mlops run` creates the
SQLite store (its time is reported as "first run") and both write bytecode
caches. PYTHONDONTWRITEBYTECODE is removed from the runs' environment, since
users' machines cache bytecode; MLFLOW_DISABLE_TELEMETRY is set.

Run it from the repository root:

    uv run python benchmarks/pipeline_overhead.py [--runs 7] [--gate both|true|false] [--keep]

It exits 0 whatever the ratio (it is a measurement); 1 if a run fails.
"""

from __future__ import annotations

import re
import statistics
import sys
from pathlib import Path

from _commands import MLOPS, benchmark_options, command_env, new_project, require_mlops, timed, work_folder

TARGET_RATIO = 2.0
HERE = Path(__file__).resolve().parent
BARE_SCRIPT = HERE / "bare_iris.py"
PYTHON = Path(sys.executable)
GATE_SHIPPED = "beat_champion = true"
FINISHED = re.compile(r"(?i)finished\s+in\s+([0-9.]+)\s*s")


def main() -> None:
    parser = benchmark_options(__doc__, runs=7, runs_help="timed runs of each (the target needs >= 5)")
    parser.add_argument("--gate", choices=["both", "true", "false"], default="both", help="beat_champion setting(s)")
    args = parser.parse_args()
    require_mlops(MLOPS)

    env = command_env()

    with work_folder("pipeline-overhead", keep=args.keep) as work:
        print("(a) `mlops run` in a rendered project; (b) `python bare_iris.py`: the same pandas/scikit-learn work")
        print(
            f"PYTHONDONTWRITEBYTECODE unset, MLFLOW_DISABLE_TELEMETRY=true; {args.runs} timed runs of each, alternating"
        )
        if args.runs < 5:
            print(f"note: --runs {args.runs} is below the 5 the target asks for; a quick check only")
        summary = []
        for beat in ["false", "true"] if args.gate == "both" else [args.gate]:
            summary.append((beat, *measure(work / f"beat-{beat}", beat == "true", args.runs, env)))
        print()
        for beat, a_med, b_med in summary:
            ratio = a_med / b_med
            verdict = "PASS" if ratio <= TARGET_RATIO else "FAIL"
            print(
                f"beat_champion = {beat:<5}  (a) {a_med:5.2f} s  (b) {b_med:5.2f} s  "
                f"a/b {ratio:4.2f}  target <= {TARGET_RATIO:.1f}: {verdict}"
            )


def measure(work: Path, beat_champion: bool, runs: int, env: dict[str, str]) -> tuple[float, float]:
    """Interleaved timed runs of (a) and (b) with one `beat_champion` setting; their medians."""
    work.mkdir(parents=True)
    project = render_project(work / "bench-iris", beat_champion, env)
    pipeline = [str(MLOPS), "run", "--no-cache"]  # every run does the work: none is reused
    champion = ["--champion", str(work / "champion")] + (["--beat-champion"] if beat_champion else [])

    def bare(name: str) -> list[str]:
        return [str(PYTHON), str(BARE_SCRIPT), str(work / "bare" / name), *champion]

    print()
    print(f"beat_champion = {str(beat_champion).lower()}")
    first, first_out = timed(pipeline, project, env)
    timed(bare("warm-up"), work, env)
    first_inside = inside(first_out)
    print(f"warm-up: first run (creates the store) {first:6.2f} s", end="")
    print(f"  (in the run {first_inside:.1f} s)" if first_inside is not None else "")

    a_times: list[float] = []
    b_times: list[float] = []
    a_inside: list[float] = []
    for i in range(1, runs + 1):
        a, out = timed(pipeline, project, env)
        b, _ = timed(bare(f"run-{i}"), work, env)
        a_times.append(a)
        b_times.append(b)
        if (seconds := inside(out)) is not None:
            a_inside.append(seconds)
        print(f"run {i:>2}: (a) mlops run {a:6.2f} s   (b) bare {b:6.2f} s   a/b {a / b:5.2f}")

    a_med, b_med = statistics.median(a_times), statistics.median(b_times)
    print(f"median (a) mlops run   {a_med:6.2f} s")
    if a_inside:
        in_med = statistics.median(a_inside)
        print(f"  of which in the run  {in_med:6.2f} s  (its own 'finished in': MLflow import + run_pipeline)")
        print(
            f"  start-up/exit        {a_med - in_med:6.2f} s  (interpreter, CLI, config, pipeline-module imports, exit)"
        )
    print(f"median (b) bare script {b_med:6.2f} s")
    print(f"ratio a/b              {a_med / b_med:6.2f}   target <= {TARGET_RATIO:.1f}")
    return a_med, b_med


def render_project(target: Path, beat_champion: bool, env: dict[str, str]) -> Path:
    """`mlops new` a project into `target`; without `beat_champion`, a gate every run passes."""
    new_project("bench-iris", target, env)
    config = target / "mlops.toml"
    text = config.read_text()
    if text.count(GATE_SHIPPED) != 1:
        sys.exit(f"{config}: expected one `{GATE_SHIPPED}` in the [model] gate; the template changed")
    if not beat_champion:
        config.write_text(text.replace(GATE_SHIPPED, "beat_champion = false"))
    return target


def inside(stdout: str) -> float | None:
    """The seconds `mlops run` reports in its 'Finished in X.X s' line."""
    match = FINISHED.search(stdout)
    return float(match.group(1)) if match else None


if __name__ == "__main__":
    main()
