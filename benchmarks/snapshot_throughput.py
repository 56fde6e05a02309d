"""How fast does `mlops data add` version a large file, next to `dvc add` + `dvc push` and a plain `cp`?

Generates a churn-like table (10 M rows by default, mixed numeric and
categorical columns, numpy `default_rng` with a fixed seed) as a CSV
(about 650 MB) and as parquet, once: both are cached in
benchmarks/.work/data/ under a name with a data version and the row count,
so later runs skip the (untimed) generation. Then, for each file and each
timed run, interleaved, each command its own process timed by wall clock
from here:

  (a) `mlops data add FILE --name bench --project P` into a fresh, empty
      local storage root (the snapshot, its manifest with column statistics,
      and the dataset's current copy), then the same command again on the
      same root: the unchanged re-add;
  (b) in a fresh `dvc init --no-scm` folder with a fresh local remote, the
      file copied in (untimed): `dvc add FILE`, then `dvc push`, reported
      apart and summed; then `dvc add FILE` + `dvc push` again on the
      unchanged file: DVC's re-add;
  (c) `cp FILE TARGET` to a fresh target: what copying the bytes costs.

The order of (a), (b), (c) rotates from run to run, `sync` runs (untimed)
before every timed command so that one command's dirty pages do not slow
the next, and each run's outputs are deleted before the next. One untimed
warm-up of each tool on the parquet file comes first, so bytecode caches
exist. PYTHONDONTWRITEBYTECODE is removed from the commands' environment
(users' machines cache bytecode); MLFLOW_DISABLE_TELEMETRY=true and
DVC_NO_ANALYTICS=1 are set.

It prints every run's times, the medians, GB/s, and the ratios against the
targets: DVC add + push / mlops data add >= 2.0 on the parquet file and
>= 1.5 on the CSV; mlops data add / cp <= 2.0 on both.

Run it from the repository root (the `bench` extra installs DVC):

    bash benchmarks/snapshot_throughput.sh [--runs 3] [--rows 10000000] [--keep]
    bash benchmarks/snapshot_throughput.sh --rows 200000 --runs 1     # a quick smoke run

It exits 0 whatever the numbers (it is a measurement); 1 if a command fails.
"""

from __future__ import annotations

import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from _commands import MLOPS, benchmark_options, command_env, run_checked, timed

DATA_VERSION = "v1"  # bump when the generated table changes, so cached files are made anew
SEED = 20240611
TARGET_DVC_OVER_MLOPS = {"parquet": 2.0, "csv": 1.5}
TARGET_MLOPS_OVER_CP = 2.0
NAME = "bench"
HERE = Path(__file__).resolve().parent
WORK = HERE / ".work"
DATA = WORK / "data"
PYTHON = Path(sys.executable)
DVC = PYTHON.parent / "dvc"
MLOPS_TOML = f"""\
[project]
name = "{NAME}"
package = "{NAME}"

[environments.local]
storage = "storage"  # each timed run sets MLOPS_STORAGE to a fresh folder
tracking_uri = "sqlite:///mlruns.db"
"""
REGIONS = ["north", "north-east", "east", "south-east", "south", "south-west", "west", "north-west"]
PLANS = ["basic", "standard", "premium", "enterprise"]
TOOLS = ("mlops", "dvc", "cp")


def main() -> None:
    parser = benchmark_options(__doc__, runs=3, runs_help="timed runs of each command per file")
    parser.add_argument("--rows", type=int, default=10_000_000, help="rows of the generated table [default: 10000000]")
    args = parser.parse_args()
    if args.rows < 1:
        parser.error("--rows must be at least 1")
    for tool, hint in ((MLOPS, ""), (DVC, " with the `bench` extra (uv sync --extra bench)")):
        if not tool.exists():
            sys.exit(f"no `{tool.name}` next to {PYTHON}; run this with the project's venv{hint}")

    env = command_env()
    env["DVC_NO_ANALYTICS"] = "1"

    files = make_data(args.rows)
    WORK.mkdir(exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="snapshot-throughput-", dir=WORK))
    env["DVC_SITE_CACHE_DIR"] = str(work / "dvc-site-cache")  # not /var/tmp/dvc: removed with the work folder
    try:
        project = work / "project"
        project.mkdir()
        (project / "mlops.toml").write_text(MLOPS_TOML)
        print_facts(work, files, env)
        if args.runs < 3:
            print(f"note: --runs {args.runs} is below the 3 the targets ask for; a quick check only")
        print()

        startup = [timed([str(MLOPS), "--version"], work, env, sync=True)[0] for _ in range(3)]
        warm = work / "warm-up"
        for tool in TOOLS:
            measure(tool, files["parquet"], warm, project, env, args.rows)
        print(f"start-up: `mlops --version` median of 3 {statistics.median(startup):.3f} s (warm-up done)")
        print()

        times: dict[str, dict[str, list[float]]] = {kind: {} for kind in files}
        for i in range(1, args.runs + 1):
            order = TOOLS[(i - 1) % 3 :] + TOOLS[: (i - 1) % 3]
            for kind, path in files.items():
                row: dict[str, float] = {}
                for tool in order:
                    row |= measure(tool, path, work / f"run-{i}-{kind}", project, env, args.rows)
                for key, seconds in row.items():
                    times[kind].setdefault(key, []).append(seconds)
                print(f"run {i} {kind:<7} ({' > '.join(order)}): {format_run(row)}")
        print()

        medians = {kind: {key: statistics.median(v) for key, v in by_key.items()} for kind, by_key in times.items()}
        for kind, path in files.items():
            report(kind, path.stat().st_size, medians[kind])
        summary(files, medians)
    finally:
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


# -- data ----------------------------------------------------------------------
def make_data(rows: int) -> dict[str, Path]:
    """The parquet and CSV files of `rows` rows, generated (untimed) unless cached."""
    stem = f"churn-{DATA_VERSION}-seed{SEED}-{rows}"
    files = {"parquet": DATA / f"{stem}.parquet", "csv": DATA / f"{stem}.csv"}
    if all(p.exists() for p in files.values()):
        return files

    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    print(f"generating {rows:,} rows (seed {SEED}, untimed) into {DATA} ...", flush=True)
    started = time.perf_counter()
    rng = np.random.default_rng(SEED)
    region_p = np.array([18, 9, 14, 11, 16, 8, 15, 9]) / 100
    plan_p = np.array([45, 32, 18, 5]) / 100
    table = pa.table(
        {
            "customer_id": np.arange(1_000_001, 1_000_001 + rows, dtype=np.int64),
            "age": rng.integers(18, 90, rows, dtype=np.int16),
            "tenure_months": rng.integers(0, 121, rows, dtype=np.int16),
            "monthly_spend": np.round(rng.gamma(2.0, 35.0, rows), 2),
            "balance": np.round(rng.lognormal(8.0, 1.2, rows), 2),
            "score": np.round(rng.random(rows), 4),
            "usage_gb": np.round(rng.exponential(40.0, rows), 3),
            "region": pc.take(pa.array(REGIONS), pa.array(rng.choice(len(REGIONS), rows, p=region_p))),
            "plan": pc.take(pa.array(PLANS), pa.array(rng.choice(len(PLANS), rows, p=plan_p))),
            "churned": (rng.random(rows) < 0.18).astype(np.int8),
        }
    )
    DATA.mkdir(parents=True, exist_ok=True)
    for kind, path in files.items():
        partial = path.with_name(f".{path.name}.partial")
        if kind == "parquet":
            pq.write_table(table, partial)
        else:
            pacsv.write_csv(table, partial)
        partial.replace(path)
    print(f"generated in {time.perf_counter() - started:.1f} s", flush=True)
    return files


# -- the three commands ----------------------------------------------------------
def measure(tool: str, source: Path, folder: Path, project: Path, env: dict[str, str], rows: int) -> dict[str, float]:
    """Time one tool on `source` in a fresh `folder`, check what it wrote, delete it; its seconds by label."""
    folder.mkdir(parents=True, exist_ok=True)
    try:
        if tool == "mlops":
            return measure_mlops(source, folder, project, env, rows)
        if tool == "dvc":
            return measure_dvc(source, folder, env)
        target = folder / "cp-target"
        seconds, _ = timed(["cp", str(source), str(target)], folder, env, sync=True)
        expect_size(target, source)
        return {"cp": seconds}
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def measure_mlops(source: Path, folder: Path, project: Path, env: dict[str, str], rows: int) -> dict[str, float]:
    """`mlops data add` into a fresh storage root, then again unchanged."""
    storage = folder / "mlops-storage"
    run_env = env | {"MLOPS_STORAGE": str(storage)}
    fmt = source.suffix.lstrip(".")
    cmd = [str(MLOPS), "data", "add", str(source), "--name", NAME, "--project", str(project)]
    add, out = timed(cmd, project, run_env, sync=True)
    expect_output(out, f"{rows:,} rows", "(stored)")
    snapshots_dir = storage / "snapshots" / NAME
    snapshots, manifests = list(snapshots_dir.glob(f"*.{fmt}")), list(snapshots_dir.glob("*.json"))
    if len(snapshots) != 1 or len(manifests) != 1:
        found = [p.name for p in snapshots + manifests]
        warn(f"expected one .{fmt} and one manifest in {snapshots_dir}, found {found}")
    for path in snapshots:
        expect_size(path, source)
    current = storage / "datasets" / f"{NAME}.{fmt}"
    expect_size(current, source)
    before = current.stat().st_ino, current.stat().st_mtime_ns

    readd, out = timed(cmd, project, run_env, sync=True)
    expect_output(out, f"{rows:,} rows", "(unchanged, already stored)")
    if (current.stat().st_ino, current.stat().st_mtime_ns) != before:
        warn(f"the unchanged re-add wrote {current.relative_to(storage)} again ({source.stat().st_size / 1e6:,.0f} MB)")
    return {"mlops add": add, "mlops re-add": readd}


def measure_dvc(source: Path, folder: Path, env: dict[str, str]) -> dict[str, float]:
    """`dvc add` + `dvc push` in a fresh repository with a fresh local remote, then both again unchanged."""
    repo, remote = folder / "dvc-repo", folder / "dvc-remote"
    repo.mkdir()
    run_checked([str(DVC), "init", "--no-scm", "-q"], repo, env)
    run_checked([str(DVC), "remote", "add", "-d", "local", str(remote)], repo, env)
    run_checked([str(DVC), "config", "core.analytics", "false"], repo, env)
    shutil.copyfile(source, repo / source.name)  # untimed; a copy, so DVC can never touch the cached file
    add, _ = timed([str(DVC), "add", source.name], repo, env, sync=True)
    push, _ = timed([str(DVC), "push"], repo, env, sync=True)
    pushed = [p for p in remote.rglob("*") if p.is_file()]
    if len(pushed) != 1:
        warn(f"expected one file in the DVC remote {remote}, found {len(pushed)}")
    for path in pushed:
        expect_size(path, source)
    readd, _ = timed([str(DVC), "add", source.name], repo, env, sync=True)
    repush, _ = timed([str(DVC), "push"], repo, env, sync=True)
    return {
        "dvc add": add,
        "dvc push": push,
        "dvc add+push": add + push,
        "dvc re-add": readd,
        "dvc re-push": repush,
        "dvc re-add+push": readd + repush,
    }


# -- helpers -------------------------------------------------------------------
def expect_output(stdout: str, *parts: str) -> None:
    text = " ".join(stdout.split())  # rich may wrap a long line
    if missing := [p for p in parts if p not in text]:
        warn(f"`mlops data add` printed {stdout.strip()!r}, without {missing}")


def expect_size(path: Path, source: Path) -> None:
    if not path.is_file() or path.stat().st_size != source.stat().st_size:
        warn(f"{path} is missing or not the size of {source.name}")


def warn(message: str, _shown: set[str] = set()) -> None:  # noqa: B006 (remembers what it printed)
    """Print a warning the first time it comes up (runs repeat them)."""
    if message not in _shown:
        _shown.add(message)
        print(f"WARNING: {message}", flush=True)


def print_facts(work: Path, files: dict[str, Path], env: dict[str, str]) -> None:
    import pyarrow

    dvc = run_checked([str(DVC), "--version"], work, env).stdout.strip()
    mlops = run_checked([str(MLOPS), "--version"], work, env).stdout.split()[-1]
    print(f"python {sys.version.split()[0]} ({PYTHON}), {os.cpu_count()} CPUs, {platform.platform()}")
    print(f"pyarrow {pyarrow.__version__}, dvc {dvc}, mlops {mlops}; work folder {work}")
    for kind, path in files.items():
        print(f"{kind:<7} {path.stat().st_size / 1e6:8.1f} MB  {path}")
    print("(a) mlops data add FILE (fresh storage root), then again unchanged")
    print("(b) dvc add FILE + dvc push (fresh repo, fresh local remote), then both again unchanged")
    print("(c) cp FILE TARGET")
    print("`sync` before every timed command; outputs deleted after each run")
    print("PYTHONDONTWRITEBYTECODE unset, MLFLOW_DISABLE_TELEMETRY=true, DVC_NO_ANALYTICS=1")


def format_run(row: dict[str, float]) -> str:
    return (
        f"mlops add {row['mlops add']:5.2f} re-add {row['mlops re-add']:5.2f} | "
        f"dvc add {row['dvc add']:5.2f} + push {row['dvc push']:5.2f} = {row['dvc add+push']:5.2f}, "
        f"re-add {row['dvc re-add']:5.2f} + {row['dvc re-push']:5.2f} = {row['dvc re-add+push']:5.2f} | "
        f"cp {row['cp']:5.2f}"
    )


def report(kind: str, size: int, m: dict[str, float]) -> None:
    def line(label: str, key: str) -> None:
        print(f"  {label:<22} {m[key]:6.2f} s  {size / 1e9 / m[key]:5.2f} GB/s")

    print(f"{kind}: {size / 1e6:,.1f} MB, medians")
    line("mlops data add", "mlops add")
    line("dvc add", "dvc add")
    line("dvc push", "dvc push")
    line("dvc add + push", "dvc add+push")
    line("cp", "cp")
    print(f"  re-add, unchanged:     mlops {m['mlops re-add']:.2f} s; dvc add {m['dvc re-add']:.2f} s, ", end="")
    print(f"add + push {m['dvc re-add+push']:.2f} s")
    dvc_ratio, cp_ratio = m["dvc add+push"] / m["mlops add"], m["mlops add"] / m["cp"]
    print(f"  dvc (add + push) / mlops add   {dvc_ratio:5.2f}   target >= {TARGET_DVC_OVER_MLOPS[kind]:.1f}")
    print(f"  mlops add / cp                 {cp_ratio:5.2f}   target <= {TARGET_MLOPS_OVER_CP:.1f}")
    print(f"  dvc re-add / mlops re-add      {m['dvc re-add'] / m['mlops re-add']:5.2f}   ", end="")
    print(f"(add + push: {m['dvc re-add+push'] / m['mlops re-add']:.2f})")
    print()


def summary(files: dict[str, Path], medians: dict[str, dict[str, float]]) -> None:
    print(f"{'summary (medians)':<52} {'measured':>9}  verdict")
    for kind in files:
        m, target = medians[kind], TARGET_DVC_OVER_MLOPS[kind]
        ratio = m["dvc add+push"] / m["mlops add"]
        summary_line(f"{kind}: dvc add+push / mlops data add >= {target:.1f}", ratio, verdict(ratio >= target))
    cap = TARGET_MLOPS_OVER_CP
    for kind in files:
        ratio = medians[kind]["mlops add"] / medians[kind]["cp"]
        summary_line(f"{kind}: mlops data add / cp <= {cap:.1f}", ratio, verdict(ratio <= cap))
    for kind in files:
        m = medians[kind]
        for key in ("dvc re-add", "dvc re-add+push"):
            label = f"{kind}: unchanged re-add, {key.replace('re-', '')} / mlops"
            summary_line(label, m[key] / m["mlops re-add"], "(no target)")


def summary_line(label: str, ratio: float, outcome: str) -> None:
    print(f"{label:<52} {ratio:8.2f}x  {outcome}")


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


if __name__ == "__main__":
    main()
