"""What recording a run's code and environment costs: `provenance.capture` on a dirty work tree, against
the `git status` it cannot do without.

A repository with 200 tracked files, 5 of them changed. N rounds (default 7), interleaved: `capture(root)`
in this process (git status, the diff of tracked files, the secret scan, every installed package) and
`git status --porcelain` as a process. It prints the medians and their ratio; target: capture <= 3 x git
status (a run pays it once per process).

    uv run python benchmarks/provenance_capture.py [--runs 7]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

TARGET = 3.0


def repository(root: Path) -> None:
    git = ["git", "-c", "user.name=b", "-c", "user.email=b@localhost"]
    subprocess.run([*git, "init", "-q", "--initial-branch=main"], cwd=root, check=True)
    for i in range(200):
        (root / f"module_{i:03d}.py").write_text("".join(f"value_{j} = {j}\n" for j in range(100)))
    subprocess.run([*git, "add", "-A"], cwd=root, check=True)
    subprocess.run([*git, "commit", "-qm", "start"], cwd=root, check=True)
    for i in range(5):
        (root / f"module_{i:03d}.py").write_text("changed = True\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    from mlops_template.pipeline.provenance import capture

    captured, status = [], []
    with tempfile.TemporaryDirectory(prefix="mlops-provenance-") as tmp:
        root = Path(tmp)
        repository(root)
        capture(root)  # warm-up: importlib.metadata's first scan
        for _ in range(args.runs):
            started = time.perf_counter()
            assert capture(root).diff
            captured.append(time.perf_counter() - started)
            started = time.perf_counter()
            subprocess.run(["git", "status", "--porcelain"], cwd=root, check=True, capture_output=True)
            status.append(time.perf_counter() - started)
    a, b = statistics.median(captured), statistics.median(status)
    print(f"capture     median {a * 1000:.1f} ms  ({', '.join(f'{v * 1000:.1f}' for v in captured)})")
    print(f"git status  median {b * 1000:.1f} ms  ({', '.join(f'{v * 1000:.1f}' for v in status)})")
    print(f"ratio {a / b:.2f}: {'PASS' if a / b <= TARGET else 'FAIL'} (target <= {TARGET:.0f})")


if __name__ == "__main__":
    main()
