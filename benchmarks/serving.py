"""Does following an alias cost anything? `mlops serve` against `mlflow models serve` on the same model.

A project rendered with `mlops new` runs its pipeline once (v1 is champion). Then, N rounds (default 5),
the two servers take turns, each started fresh on a free port:

  mlflow   `mlflow models serve -m models:/<name>/1 --env-manager local` (MLflow's scoring server, alone)
  mlops    `mlops serve` (the same scoring server, behind the alias-following, counting front)

Against each, for single-row and 1,000-row requests (`dataframe_split` JSON), a client of CLIENTS
threads with keep-alive connections sends requests for SECONDS seconds; it counts requests per second
and takes each request's latency. It prints each round and the medians: the target is mlops' throughput
>= 0.95 x MLflow's and its p99 <= 1.15 x MLflow's.

    uv run python benchmarks/serving.py [--runs 5] [--seconds 5] [--keep]

It exits 0 whatever the figures (it is a measurement); 1 if a server fails or answers other than 200.
"""

from __future__ import annotations

import http.client
import json
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

from _commands import MLOPS, benchmark_options, command_env, new_project, require_mlops, run_checked, work_folder

PYTHON = Path(sys.executable)
MLFLOW = PYTHON.parent / "mlflow"
CLIENTS = 4
THROUGHPUT_TARGET, P99_TARGET = 0.95, 1.15


def main() -> None:
    parser = benchmark_options(__doc__, runs=5, runs_help="timed rounds of each server")
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()
    require_mlops(MLOPS)
    env = command_env()
    with work_folder("serving", keep=args.keep) as work:
        project = work / "bench-serve"
        new_project("bench-serve", project, env)
        run_checked([str(MLOPS), "run"], project, env)
        bodies = request_bodies(project)
        results: dict[tuple[str, str], list[tuple[float, float, float]]] = {}
        for i in range(1, args.runs + 1):
            for server in ("mlflow", "mlops"):
                with started(server, project, env) as port:
                    for size, body in bodies.items():
                        rps, p50, p99 = load(port, body, args.seconds)
                        results.setdefault((server, size), []).append((rps, p50, p99))
                        print(f"run {i} {server:<6} {size:>9}: {rps:7.1f} req/s  p50 {p50:6.1f} ms  p99 {p99:6.1f} ms")
        report(results, bodies)


def request_bodies(project: Path) -> dict[str, bytes]:
    import pandas as pd

    rows = pd.read_parquet(project / "data" / "datasets" / "featurized.parquet").drop(columns=["species"])
    many = pd.concat([rows] * (1000 // len(rows) + 1), ignore_index=True).head(1000)

    def split(df: pd.DataFrame) -> bytes:
        return json.dumps({"dataframe_split": json.loads(df.to_json(orient="split", index=False))}).encode()

    return {"1 row": split(rows.head(1)), "1000 rows": split(many)}


class started:
    """One server on a free port, as its own process; stopped on exit."""

    def __init__(self, server: str, project: Path, env: dict[str, str]) -> None:
        self.port = free_port()
        uri = f"sqlite:///{project / 'mlruns.db'}"
        if server == "mlflow":
            self.command = [str(MLFLOW), "models", "serve", "-m", "models:/bench-serve/1", "--env-manager", "local"]
            self.command += ["--port", str(self.port), "--host", "127.0.0.1"]
            # it starts `uvicorn` by name: this environment's, first on PATH
            self.env = env | {"MLFLOW_TRACKING_URI": uri, "PATH": f"{PYTHON.parent}:{env.get('PATH', '')}"}
        else:
            self.command = [str(MLOPS), "serve", "--port", str(self.port)]
            self.env = env
        self.project = project

    def __enter__(self) -> int:
        self.log = open(self.project / "server.log", "wb")  # noqa: SIM115
        self.process = subprocess.Popen(self.command, cwd=self.project, env=self.env, stdout=self.log, stderr=self.log)
        for _ in range(1200):
            if self.process.poll() is not None:
                sys.exit(f"FAILED: {' '.join(self.command)} exited {self.process.returncode}")
            try:
                connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
                connection.request("GET", "/ping")
                if connection.getresponse().status == 200:
                    return self.port
            except OSError:
                time.sleep(0.1)
        sys.exit(f"FAILED: {' '.join(self.command)} did not answer")

    def __exit__(self, *exc) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)
        self.log.close()


def load(port: int, body: bytes, seconds: float) -> tuple[float, float, float]:
    """CLIENTS threads sending `body` for `seconds`: requests per second, p50 and p99 latency in ms."""
    latencies: list[float] = []
    failures: list[int] = []
    stop = time.perf_counter() + seconds

    def client() -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        mine = []
        while time.perf_counter() < stop:
            started_at = time.perf_counter()
            connection.request("POST", "/invocations", body, {"Content-Type": "application/json"})
            response = connection.getresponse()
            response.read()
            mine.append(time.perf_counter() - started_at)
            if response.status != 200:
                failures.append(response.status)
        latencies.extend(mine)

    threads = [threading.Thread(target=client) for _ in range(CLIENTS)]
    began = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - began
    if failures:
        sys.exit(f"FAILED: {len(failures)} requests answered {sorted(set(failures))}")
    ordered = sorted(latencies)
    return len(ordered) / elapsed, 1000 * ordered[len(ordered) // 2], 1000 * ordered[int(len(ordered) * 0.99)]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def report(results: dict, bodies: dict) -> None:
    print()
    for size in bodies:
        mlflow = [statistics.median(x) for x in zip(*results[("mlflow", size)], strict=True)]
        mlops = [statistics.median(x) for x in zip(*results[("mlops", size)], strict=True)]
        throughput, p99 = mlops[0] / mlflow[0], mlops[2] / mlflow[2]
        print(
            f"{size:>9}: mlflow {mlflow[0]:7.1f} req/s p99 {mlflow[2]:6.1f} ms; mlops {mlops[0]:7.1f} req/s "
            f"p99 {mlops[2]:6.1f} ms; throughput {throughput:4.2f} (>= {THROUGHPUT_TARGET}: "
            f"{'PASS' if throughput >= THROUGHPUT_TARGET else 'FAIL'}), p99 {p99:4.2f} (<= {P99_TARGET}: "
            f"{'PASS' if p99 <= P99_TARGET else 'FAIL'})"
        )


if __name__ == "__main__":
    main()
