"""Does a tracked `mlops run` cost what the work costs, at 100 k and 1 M rows of a team's own table?

For each row count it renders a project with `mlops new`, drops a synthetic
table into its `data/raw/` (what the template's `data/raw/README.md` tells a
team to do), points `[params] target` at the table's label and sets the gate
to `{ min = 0.0, beat_champion = false }` so every run does the full work.
Then it alternately runs, each as its own process timed by wall clock from
here, with the peak RSS of its process tree sampled with psutil:

  (a) `mlops run` in the project (make_data -> feat_data -> train_model -> predict);
  (b) `bare_table.py`: the same pandas/scikit-learn work with no tracking.

The table (numpy `default_rng` with a fixed seed, cached in
`benchmarks/.work/data/`): six numeric columns with gaps (~3 % blank), three
text columns (8, 40 and 300 distinct values, some blank) and a yes/no label
drawn from a logistic model of the others. `feat_data` finds nothing to
derive in it and writes its input unchanged: its time is the framework's own
cost per step.

After the timed runs, one untimed pass runs each step in a process of its
own under cProfile (`mlops run --step S --pipeline-run K`, one key) and sums
the time spent in each part of the framework's work (read, hash, manifest,
write, the gate's scoring, loading the champion, MLflow logging; the rest of the step function is
user code), from the functions named in PARTS.

    uv run --extra bench python benchmarks/scale.py [--rows 100000 1000000] [--runs 3] [--keep]

Targets: 1 M rows a/b <= 1.25, 100 k rows a/b <= 1.6, a step that writes its
input unchanged <= 1.5 s per million rows. Exits 0 whatever the figures (it
is a measurement); 1 if a run fails.

With `--engine`, it compares the two engines instead, on the same table:
`mlops run --step make_data --step feat_data` with `MLOPS_ENGINE=pandas` and
with `MLOPS_ENGINE=dask` (a LocalCluster of one worker per core), interleaved,
wall time and the peak RSS of the whole process tree (the Dask workers are
its children). Then the whole pipeline once per engine under `--memory-cap`
(default: two thirds of the pandas engine's peak, as training holds its
`max_train_rows` sample in memory on either engine): the tree is killed when
it goes above the cap, and the Dask workers are told the cap
(`MLOPS_DASK_MEMORY_LIMIT`).

    uv run --extra bench python benchmarks/scale.py --engine --rows 1000000 3000000 10000000

Targets: Dask's peak RSS <= 1/3 of pandas' and its wall time <= 1.5x, at 10 M rows;
under the cap Dask completes where pandas is killed.
"""

from __future__ import annotations

import os
import pstats
import re
import statistics
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

from _commands import MLOPS, WORK, benchmark_options, command_env, new_project, require_mlops, run_checked, work_folder

HERE = Path(__file__).resolve().parent
BARE_SCRIPT = HERE / "bare_table.py"
PYTHON = Path(sys.executable)
DATA_VERSION, SEED, TARGET = 1, 19, "churn"
TARGETS = {100_000: 1.6, 1_000_000: 1.25}  # rows: the largest a/b
PASS_THROUGH_STEP, PASS_THROUGH_TARGET = "feat_data", 1.5  # seconds per million rows
STEPS = ("make_data", "feat_data", "train_model", "predict")
STEP_LINE = re.compile(r"^\s*\S\s+(\w+)\s+([0-9.]+)\s*s", re.MULTILINE)

#: The framework's work by part: (file, function) pairs whose time counts for the part. A call from one function
#: of a part to another of the same part counts once, and a part's direct calls to another part's functions count
#: for that part only; what is left of a step function's time is user code (pandas, scikit-learn, ...).
PARTS: dict[str, tuple[tuple[str, ...], ...]] = {
    "read (parse)": (
        ("mlops_template/data/tables.py", "read_table"),
        ("mlops_template/data/tables.py", "parse_table"),
    ),
    "hash": (
        ("mlops_template/data/hashing.py", "write"),  # HashingWriter: the bytes on their way to storage
        ("mlops_template/data/hashing.py", "digest_bytes"),
        ("mlops_template/data/hashing.py", "digest_file"),
        ("mlops_template/data/hashing.py", "copy_hashing"),
        ("mlops_template/data/hashing.py", "stream_file"),
    ),
    "manifest": (
        ("mlops_template/data/manifest.py", "profile_table"),
        ("mlops_template/data/manifest.py", "profile_file"),
    ),
    "write (parquet)": (
        ("pyarrow/pandas_compat.py", "dataframe_to_arrays"),
        ("pyarrow/parquet/core.py", "write_table"),
        ("mlops_template/data/tables.py", "write_table"),
    ),
    "gate scoring": (  # the held-out rows predicted and scored again by propose_model for the metrics and gate
        ("mlops_template/models/scoring.py", "reported_metrics"),
        ("mlops_template/models/scoring.py", "score"),
        ("mlops_template/models/scoring.py", "predict", "propose_model"),  # (file, function, only when called by)
        ("mlops_template/models/scoring.py", "predict", "_decide"),
    ),
    "model load": (("mlops_template/pipeline/proposal.py", "load_champion"),),
    "MLflow logging": (
        ("mlops_template/tracking/inputs.py", "log_dataset"),
        ("mlops_template/models/flavors.py", "log_model"),
        ("mlflow/tracking/fluent.py", "set_tag"),
        ("mlflow/tracking/fluent.py", "log_metrics"),
        ("mlflow/tracking/fluent.py", "log_figure"),
    ),
}


def main() -> None:
    parser = benchmark_options(__doc__, runs=3, runs_help="timed runs of each per row count")
    parser.add_argument("--rows", type=int, nargs="+", default=[100_000, 1_000_000], help="row counts [100000 1000000]")
    parser.add_argument("--no-profile", action="store_true", help="skip the per-part breakdown")
    parser.add_argument("--engine", action="store_true", help="compare the pandas and Dask engines instead")
    parser.add_argument("--memory-cap", help="with --engine: the process tree's memory cap, e.g. 2GiB")
    args = parser.parse_args()
    require_mlops(MLOPS)
    try:
        import psutil  # noqa: F401
    except ImportError:
        sys.exit("psutil is missing: run this with the `bench` extra (uv run --extra bench python benchmarks/scale.py)")

    env = command_env()
    if args.engine:
        with work_folder("scale-engines", keep=args.keep) as work:
            compare_engines(work, args.rows, args.runs, env, args.memory_cap)
        return
    results = []
    with work_folder("scale", keep=args.keep) as work:
        print("(a) `mlops run` in a rendered project; (b) `python bare_table.py`: the same pandas/scikit-learn work")
        print(f"PYTHONDONTWRITEBYTECODE unset, MLFLOW_DISABLE_TELEMETRY=true; {args.runs} timed runs of each")
        for rows in args.rows:
            results.append(measure(work / f"rows-{rows}", rows, args.runs, env, profile=not args.no_profile))
        print()
        summarise(results)


def measure(work: Path, rows: int, runs: int, env: dict[str, str], *, profile: bool) -> dict:
    """Interleaved timed runs of (a) and (b) on a table of `rows` rows; medians, per-step times, the breakdown."""
    work.mkdir(parents=True)
    (work / "profiled").mkdir()
    table = synthetic_table(rows)
    project = render_project(work / "bench-scale", table, env)
    pipeline = [str(MLOPS), "run", "--no-cache"]  # every run does the work: none is reused

    def bare(name: str) -> list[str]:
        return [str(PYTHON), str(BARE_SCRIPT), str(table), str(work / "bare" / name), "--target", TARGET]

    print(f"\n{rows:,} rows: {table.name}, {table.stat().st_size / 1e6:.0f} MB; load {load()}")
    first, _, first_out = sampled(pipeline, project, env)
    sampled(bare("warm-up"), work, env)
    print(f"warm-up: first run (creates the store) {first:6.2f} s  {step_times(first_out)}")

    a_times, b_times, a_rss, b_rss, steps = [], [], [], [], {s: [] for s in STEPS}
    for i in range(1, runs + 1):
        a, a_peak, out = sampled(pipeline, project, env)
        b, b_peak, _ = sampled(bare(f"run-{i}"), work, env)
        a_times.append(a)
        b_times.append(b)
        a_rss.append(a_peak)
        b_rss.append(b_peak)
        for step, seconds in step_times(out).items():
            steps[step].append(seconds)
        print(
            f"run {i:>2}: (a) mlops run {a:6.2f} s {a_peak:6.0f} MB   (b) bare {b:6.2f} s {b_peak:6.0f} MB   "
            f"a/b {a / b:5.2f}   {step_times(out)}"
        )
    result = {
        "rows": rows,
        "mb": table.stat().st_size / 1e6,
        "a": statistics.median(a_times),
        "b": statistics.median(b_times),
        "a_rss": max(a_rss),
        "b_rss": max(b_rss),
        "steps": {s: statistics.median(v) for s, v in steps.items() if v},
        "load": load(),
    }
    if profile:  # in a fresh project: every snapshot is new, so its manifest is made too (the timed runs reuse them)
        fresh = render_project(work / "profiled" / "bench-scale", table, env)
        result["parts"] = breakdown(fresh, work / "profiled", env)
    return result


def summarise(results: list[dict]) -> None:
    """The table of medians, the targets with PASS/FAIL, then the per-part breakdown of each row count."""
    head = f"{'rows':>10} {'(a) s':>8} {'(b) s':>8} {'a/b':>6} {'MB/s a':>7} {'MB/s b':>7} {'RSS a':>7} {'RSS b':>7}"
    print(head + "".join(f" {s:>11}" for s in STEPS))
    for r in results:
        line = f"{r['rows']:>10,} {r['a']:8.2f} {r['b']:8.2f} {r['a'] / r['b']:6.2f} "
        line += f"{r['mb'] / r['a']:7.1f} {r['mb'] / r['b']:7.1f} {r['a_rss']:6.0f}M {r['b_rss']:6.0f}M"
        print(line + "".join(f" {r['steps'].get(s, float('nan')):10.2f}s" for s in STEPS) + f"   load {r['load']}")
    print("(MB/s: the raw CSV's size over the median wall time; RSS: the largest peak of the process tree)")
    print()
    for r in results:
        if r["rows"] in TARGETS:
            ratio, target = r["a"] / r["b"], TARGETS[r["rows"]]
            print(
                f"{r['rows']:>10,} rows: a/b {ratio:5.2f}  target <= {target}: {'PASS' if ratio <= target else 'FAIL'}"
            )
        if PASS_THROUGH_STEP in r["steps"]:
            per_million = r["steps"][PASS_THROUGH_STEP] / r["rows"] * 1e6
            verdict = "PASS" if per_million <= PASS_THROUGH_TARGET else "FAIL"
            if r["rows"] < 1_000_000:
                verdict = "(judged from 1 M rows: below, the step's fixed cost dominates)"
            print(
                f"{r['rows']:>10,} rows: {PASS_THROUGH_STEP} (writes its input unchanged) {per_million:5.2f} s per "
                f"million rows  target <= {PASS_THROUGH_TARGET}: {verdict}"
            )
    for r in results:
        if "parts" in r:
            print(f"\nwhere a step's time goes at {r['rows']:,} rows (one untimed in-process run under cProfile, s)")
            print_parts(r["parts"])


def synthetic_table(rows: int) -> Path:
    """The benchmark's CSV table of `rows` rows, generated once with a fixed seed and cached."""
    path = WORK / "data" / f"scale-v{DATA_VERSION}-seed{SEED}-{rows}.csv"
    if path.exists():
        return path
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(SEED)
    age = rng.integers(18, 90, rows).astype(float)
    tenure = rng.integers(0, 120, rows).astype(float)
    spend = np.round(rng.gamma(2.0, 40.0, rows), 2)
    balance = np.round(rng.normal(1500, 900, rows), 2)
    score = np.round(rng.uniform(0, 1, rows), 4)
    usage = np.round(rng.exponential(12.0, rows), 3)
    plan = rng.choice([f"plan_{i}" for i in range(8)], rows)
    city = rng.choice([f"city_{i:02d}" for i in range(40)], rows)
    product = rng.choice([f"product_{i:03d}" for i in range(300)], rows)
    logit = 0.04 * (45 - age) - 0.03 * tenure + 0.01 * spend + 2.5 * (score - 0.5)
    logit += np.where(np.isin(plan, ["plan_0", "plan_1"]), 1.5, -0.5)
    label = np.where(rng.uniform(0, 1, rows) < 1 / (1 + np.exp(-logit)), "yes", "no")
    df = pd.DataFrame(
        {
            "age": age,
            "tenure": tenure,
            "spend": spend,
            "balance": balance,
            "score": score,
            "usage": usage,
            "plan": plan,
            "city": city,
            "product": product,
            TARGET: label,
        }
    )
    for column in df.columns[:-1]:  # gaps in every column but the label
        df.loc[rng.uniform(0, 1, rows) < 0.03, column] = None
    path.parent.mkdir(parents=True, exist_ok=True)
    staged = path.with_suffix(".tmp")
    df.to_csv(staged, index=False)
    staged.rename(path)
    return path


def render_project(target: Path, table: Path, env: dict[str, str]) -> Path:
    """`mlops new` a project into `target` with `table` in its data/raw/, its target, and a gate every run passes."""
    new_project("bench-scale", target, env)
    config = target / "mlops.toml"
    text = config.read_text()
    for old, new in [
        ('target = "species"', f'target = "{TARGET}"'),
        ("gate = { min = 0.8, beat_champion = true }", "gate = { min = 0.0, beat_champion = false }"),
    ]:
        if text.count(old) != 1:
            sys.exit(f"{config}: expected one `{old}`; the template changed")
        text = text.replace(old, new)
    config.write_text(text)
    os.link(table, target / "data" / "raw" / table.name)  # the bytes a team drops in, without a copy
    return target


ENGINE_STEPS = ["run", "--no-cache", "--step", "make_data", "--step", "feat_data"]
ENGINE_TARGETS = {"rss": 1 / 3, "wall": 1.5}  # dask / pandas, at the largest row count


def compare_engines(work: Path, rows_list: list[int], runs: int, env: dict[str, str], cap: str | None) -> None:
    """Interleaved runs of make_data + feat_data on each engine; then the whole pipeline under a memory cap."""
    results = []
    for rows in rows_list:
        table = synthetic_table(rows)
        (work / f"rows-{rows}").mkdir()
        project = render_project(work / f"rows-{rows}" / "bench-scale", table, env)
        engine_env = {e: {**env, "MLOPS_ENGINE": e} for e in ("pandas", "dask")}
        print(f"\n{rows:,} rows: {table.name}, {table.stat().st_size / 1e6:.0f} MB; load {load()}")
        for engine in engine_env:  # warm-up: the first run stores the snapshots the timed ones find again
            sampled([str(MLOPS), *ENGINE_STEPS], project, engine_env[engine])
        times = {e: [] for e in engine_env}
        peaks = {e: [] for e in engine_env}
        for i in range(1, runs + 1):
            line = f"run {i:>2}:"
            for engine in engine_env:
                seconds, peak, _ = sampled([str(MLOPS), *ENGINE_STEPS], project, engine_env[engine])
                times[engine].append(seconds)
                peaks[engine].append(peak)
                line += f"  {engine} {seconds:6.2f} s {peak:6.0f} MB"
            print(line)
        results.append(
            {
                "rows": rows,
                "mb": table.stat().st_size / 1e6,
                **{f"{e}_s": statistics.median(times[e]) for e in engine_env},
                **{f"{e}_rss": max(peaks[e]) for e in engine_env},
            }
        )
    print(f"\nmake_data + feat_data, medians of {runs}; RSS: the largest peak of the process tree")
    print(
        f"{'rows':>11} {'MB':>6} {'pandas s':>9} {'dask s':>8} {'wall d/p':>9} {'pandas MB':>10} {'dask MB':>8} {'RSS d/p':>8}"
    )
    for r in results:
        print(
            f"{r['rows']:>11,} {r['mb']:6.0f} {r['pandas_s']:9.2f} {r['dask_s']:8.2f} {r['dask_s'] / r['pandas_s']:9.2f} "
            f"{r['pandas_rss']:10.0f} {r['dask_rss']:8.0f} {r['dask_rss'] / r['pandas_rss']:8.2f}"
        )
    print(
        "per row (µs, bytes):",
        "  ".join(
            f"{r['rows']:,}: pandas {r['pandas_s'] / r['rows'] * 1e6:.1f} µs {r['pandas_rss'] * 1e6 / r['rows']:.0f} B, "
            f"dask {r['dask_s'] / r['rows'] * 1e6:.1f} µs {r['dask_rss'] * 1e6 / r['rows']:.0f} B"
            for r in results
        ),
    )
    largest = results[-1]
    wall, rss = largest["dask_s"] / largest["pandas_s"], largest["dask_rss"] / largest["pandas_rss"]
    print(
        f"at {largest['rows']:,} rows: RSS d/p {rss:.2f} target <= 1/3: {'PASS' if rss <= 1 / 3 else 'FAIL'};"
        f" wall d/p {wall:.2f} target <= 1.5: {'PASS' if wall <= 1.5 else 'FAIL'}"
    )

    from dask.utils import format_bytes, parse_bytes

    limit = parse_bytes(cap) if cap else int(largest["pandas_rss"] * 1e6 * 2 / 3)
    print(f"\nthe whole pipeline at {largest['rows']:,} rows with the process tree capped at {format_bytes(limit)}:")
    project = work / f"rows-{largest['rows']}" / "bench-scale"
    for engine in ("pandas", "dask"):
        capped = {**env, "MLOPS_ENGINE": engine, "MLOPS_DASK_MEMORY_LIMIT": str(limit)}
        seconds, peak, _ = sampled([str(MLOPS), "run", "--no-cache"], project, capped, cap=limit, check=False)
        outcome = "killed above the cap" if seconds is None else f"completed in {seconds:.1f} s"
        print(f"  {engine:<6} {outcome} (peak {peak:.0f} MB)")


def sampled(
    cmd: list[str], cwd: Path, env: dict[str, str], *, cap: int | None = None, check: bool = True
) -> tuple[float | None, float, str]:
    """Run `cmd` to completion: its wall-clock seconds, its process tree's peak RSS (MB) and its stdout.

    With `cap` (bytes), the tree is killed once its RSS goes above it, and the seconds are None.
    """
    import psutil

    started = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak, done = 0, threading.Event()

    def sample() -> None:
        nonlocal peak
        root = psutil.Process(proc.pid)
        while not done.is_set():
            try:
                tree = [root, *root.children(recursive=True)]
                total = 0
                for p in tree:
                    try:
                        total += p.memory_info().rss
                    except psutil.Error:
                        pass
                peak = max(peak, total)
                if cap is not None and total > cap:
                    killed.set()
                    for p in reversed(tree):
                        try:
                            p.kill()
                        except psutil.Error:
                            pass
                    return
            except psutil.Error:
                return
            done.wait(0.05)

    killed = threading.Event()

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    stdout, stderr = proc.communicate()
    elapsed = time.perf_counter() - started
    done.set()
    sampler.join()
    if killed.is_set():
        return None, peak / 1e6, stdout
    if proc.returncode != 0 and not check:
        print(f"  failed (exit {proc.returncode}): {stderr.strip().splitlines()[-1:] or ''}")
        return None, peak / 1e6, stdout
    if proc.returncode != 0:
        print(f"FAILED (exit {proc.returncode}): {' '.join(cmd)}  in {cwd}", file=sys.stderr)
        print(stdout, stderr, sep="\n", file=sys.stderr)
        sys.exit(1)
    return elapsed, peak / 1e6, stdout


def step_times(stdout: str) -> dict[str, float]:
    """The seconds per step `mlops run` prints (`✓ make_data   1.23 s`)."""
    return {m.group(1): float(m.group(2)) for m in STEP_LINE.finditer(stdout) if m.group(1) in STEPS}


PROFILE_CHILD = """
import cProfile, sys
from mlops_template.cli.main import main
profiler = cProfile.Profile()
try:
    profiler.runcall(main, sys.argv[2:], standalone_mode=False)
finally:
    profiler.dump_stats(sys.argv[1])
"""


def breakdown(project: Path, work: Path, env: dict[str, str]) -> dict[str, dict[str, float]]:
    """Per step, seconds by part: each step run in a process of its own under cProfile, one pipeline run's key."""
    key = f"profile-{uuid.uuid4().hex[:8]}"
    steps = {}
    for step in STEPS:
        out = work / f"profile-{step}.out"
        cmd = [str(PYTHON), "-c", PROFILE_CHILD, str(out), "run", "--no-cache", "--step", step, "--pipeline-run", key]
        started = time.perf_counter()
        run_checked(cmd, project, env)
        process = time.perf_counter() - started
        stats = pstats.Stats(str(out)).stats  # {(file, line, function): (cc, nc, tottime, cumtime, callers)}
        total = sum(v[3] for k, v in stats.items() if k[2] == step and "/bench_scale/" in k[0])
        keys = {part: part_keys(stats, functions) for part, functions in PARTS.items()}
        parts = {part: part_time(stats, keys[part], keys.values(), PARTS[part]) for part in PARTS}
        parts["user code"] = total - sum(parts.values())
        steps[step] = {"process": process, "step": total, **parts}
    return steps


def part_keys(stats: dict, functions: tuple[tuple[str, ...], ...]) -> set[tuple]:
    return {k for k in stats if any(k[0].endswith(f[0]) and k[2] == f[1] for f in functions)}


def part_time(stats: dict, keys: set[tuple], every_part, functions: tuple[tuple[str, ...], ...]) -> float:
    """The seconds in a part's functions, less their calls to one another and their direct calls to other parts.

    A function named with a third element counts only when called by a function of that name.
    """
    only = {f[1]: {g[2] for g in functions if g[1] == f[1] and len(g) > 2} for f in functions}

    def counted(key: tuple, caller: tuple) -> bool:
        return caller not in keys and (not only.get(key[2]) or caller[2] in only[key[2]])

    inclusive = sum(edge[3] for k in keys for caller, edge in stats[k][4].items() if counted(k, caller))
    nested = sum(
        edge[3]
        for other in every_part
        if other is not keys
        for k in other - keys
        for caller, edge in stats[k][4].items()
        if caller in keys
    )
    return inclusive - nested


def print_parts(steps: dict[str, dict[str, float]]) -> None:
    parts = [*PARTS, "user code"]
    print(f"{'step':<12} {'process':>8} {'step':>7}" + "".join(f" {p:>15}" for p in parts))
    for step, times in steps.items():
        line = f"{step:<12} {times['process']:8.2f} {times['step']:7.2f}"
        print(line + "".join(f" {times[p]:15.2f}" for p in parts))
    print("(process: the step's whole process, wall clock, profiled; step: its step function; the parts are in it)")


def load() -> str:
    """The 1-minute load average and the CPU count: other work on the machine shows in both columns."""
    return f"{os.getloadavg()[0]:.2f}/{os.cpu_count()} CPUs"


if __name__ == "__main__":
    main()
