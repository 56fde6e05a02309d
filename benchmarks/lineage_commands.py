"""How fast do `mlops runs`, `runs --sort`, `show` and `diff` answer on a store with 500 past pipeline runs,
and does a pipeline run slow down on such a store?

Renders two projects with `mlops new`. Each gets one untimed warm-up `mlops run` (it creates the SQLite
store and the bytecode caches). The "full" project then gets 500 past pipeline runs, written quickly
through the MLflow client as the runner records them (a parent run with four step children each, the
training child with params, metrics and a gate tag), and a second real run whose raw data is the iris
table (150 rows) with one column changed, so that `mlops diff` compares real snapshots of ~150 rows.
The "empty" project keeps only its warm-up run.

Then, N rounds (default 7), each command as its own process timed by wall clock from here, interleaved:

  mlops runs                 (the 20 newest of 500)
  mlops runs --sort f1       (every run sorted, then the first 20)
  mlops show latest
  mlops diff RUN_A RUN_B     (the two real runs: data diffs of their snapshots, code, params, packages)
  mlops models               (the registered versions, their aliases and training metric)
  mlops run                  in the full project, and in the empty one

Each round also times `python -c "import mlflow, mlflow.store.tracking.sqlalchemy_store"`: what a
command would pay before its own work if it read the store through MLflow (the commands read the local
SQLite store directly and never import MLflow). It prints every time, the medians, and each against its
target: every command <= 2.0 s; a pipeline run on the full store <= 1.1 x one on the empty store.

    uv run python benchmarks/lineage_commands.py [--runs 7] [--history 500] [--keep]

It exits 0 whatever the figures (it is a measurement); 1 if a command fails.
"""

from __future__ import annotations

import random
import re
import statistics
import sys
import time
from pathlib import Path

from _commands import MLOPS, benchmark_options, command_env, new_project, require_mlops, timed, work_folder

HERE = Path(__file__).resolve().parent
PYTHON = Path(sys.executable)
COMMAND_TARGET = 2.0
PIPELINE_RATIO = 1.1
STEPS = ("make_data", "feat_data", "train_model", "predict")
# What a command reading the store through MLflow would pay before its own work: Python, MLflow, its SQL store.
FLOOR = "import mlflow, mlflow.store.tracking.sqlalchemy_store"
RUN_ID = re.compile(r"pipeline run ([0-9a-f]{32})")


def main() -> None:
    parser = benchmark_options(__doc__, runs=7, runs_help="timed rounds")
    parser.add_argument("--history", type=int, default=500, help="past pipeline runs in the full store [default: 500]")
    args = parser.parse_args()
    require_mlops(MLOPS)
    env = command_env()
    with work_folder("lineage-commands", keep=args.keep) as work:
        measure(work, args.runs, args.history, env)


def measure(work: Path, rounds: int, history: int, env: dict[str, str]) -> None:
    full, empty = render(work, "bench-full", env), render(work, "bench-empty", env)
    first_full = pipeline_run(full, env)[1]
    pipeline_run(empty, env)
    started = time.perf_counter()
    populate(full, "bench-full", history)
    print(f"wrote {history} past pipeline runs ({history * 5} MLflow runs) in {time.perf_counter() - started:.1f} s")
    changed_raw(full)
    second_full = pipeline_run(full, env)[1]

    commands = {
        "import mlflow": [str(PYTHON), "-c", FLOOR],
        "mlops runs": [str(MLOPS), "runs"],
        "mlops runs --sort f1": [str(MLOPS), "runs", "--sort", "f1"],
        "mlops show latest": [str(MLOPS), "show", "latest"],
        "mlops diff A B": [str(MLOPS), "diff", first_full, second_full],
        "mlops models": [str(MLOPS), "models"],
    }
    times: dict[str, list[float]] = {
        name: [] for name in [*commands, "mlops run (500-run store)", "mlops run (empty store)"]
    }
    for i in range(1, rounds + 1):
        line = []
        for name, cmd in commands.items():
            seconds, _ = timed(cmd, full, env)
            times[name].append(seconds)
            line.append(f"{name} {seconds:.2f}")
        for name, project in (("mlops run (500-run store)", full), ("mlops run (empty store)", empty)):
            seconds = pipeline_run(project, env)[0]
            times[name].append(seconds)
            line.append(f"{name} {seconds:.2f}")
        print(f"round {i}: " + "; ".join(line))

    print()
    medians = {name: statistics.median(values) for name, values in times.items()}
    print(f"{'import mlflow':<28} median {medians['import mlflow']:5.2f} s  (not paid: no command imports MLflow)")
    for name in [c for c in commands if c != "import mlflow"]:
        verdict = "PASS" if medians[name] <= COMMAND_TARGET else "FAIL"
        print(f"{name:<28} median {medians[name]:5.2f} s  target <= {COMMAND_TARGET:.1f} s: {verdict}")
    ratio = medians["mlops run (500-run store)"] / medians["mlops run (empty store)"]
    verdict = "PASS" if ratio <= PIPELINE_RATIO else "FAIL"
    print(
        f"mlops run: 500-run store {medians['mlops run (500-run store)']:.2f} s, "
        f"empty store {medians['mlops run (empty store)']:.2f} s, ratio {ratio:.3f}  target <= {PIPELINE_RATIO}: {verdict}"
    )


def render(work: Path, name: str, env: dict[str, str]) -> Path:
    new_project(name, work / name, env)
    return work / name


def pipeline_run(project: Path, env: dict[str, str]) -> tuple[float, str]:
    seconds, out = timed([str(MLOPS), "run", "--no-cache"], project, env)
    found = RUN_ID.search(out)
    if found is None:
        sys.exit(f"`mlops run` printed no pipeline run id:\n{out}")
    return seconds, found.group(1)


def changed_raw(project: Path) -> None:
    """The iris table (150 rows) as raw data, one column scaled: the next run's snapshots differ from the first's."""
    from sklearn.datasets import load_iris

    data = load_iris(as_frame=True)
    df = data.frame.rename(columns=lambda c: c.replace(" (cm)", "").replace(" ", "_"))
    df["species"] = data.target_names[df.pop("target")]
    df["sepal_width"] = df["sepal_width"] * 1.1
    df.to_csv(project / "data" / "raw" / "iris.csv", index=False)


def populate(project: Path, name: str, count: int) -> None:
    """`count` past pipeline runs, as the runner records them, all before the runs made so far."""
    from mlflow import MlflowClient
    from mlflow.entities import Metric, Param, RunTag

    uri = f"sqlite:///{project / 'mlruns.db'}"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    experiment_id = client.get_experiment_by_name(name).experiment_id
    rng = random.Random(1)
    base = int(time.time() * 1000) - count * 60_000 - 3_600_000
    git = {"mlops.git_commit": "0" * 40, "mlops.git_dirty": "false", "mlops.packages": "0" * 12}
    for i in range(count):
        started = base + i * 60_000
        parent = client.create_run(
            experiment_id,
            start_time=started,
            tags={
                "mlops.pipeline": name,
                "mlops.pipeline_run": f"past-{i}",
                "mlops.environment": "local",
                "mlops.steps": ",".join(STEPS),
                **git,
            },
        ).info.run_id
        for j, step in enumerate(STEPS):
            child = client.create_run(
                experiment_id,
                start_time=started + j * 1000,
                tags={"mlflow.parentRunId": parent, "mlops.step": step, **git},
            ).info.run_id
            if step != "train_model":
                client.set_terminated(child, "FINISHED", end_time=started + j * 1000 + 900)
                continue
            f1 = rng.uniform(0.7, 0.99)
            at = started + j * 1000
            metrics = [Metric(k, v, at, 0) for k, v in (("f1", f1), ("accuracy", f1), ("precision", f1))]
            params = [Param("target", "species"), Param("max_depth", str(rng.randint(2, 8))), Param("seed", "42")]
            tags = [RunTag("mlops.gate", "failed"), RunTag("mlops.gate_reason", "did not beat the champion")]
            client.log_batch(child, metrics=metrics, params=params, tags=tags)
            client.set_terminated(child, "FINISHED", end_time=started + j * 1000 + 900)
        client.set_terminated(parent, "FINISHED", end_time=started + 4000)


if __name__ == "__main__":
    main()
