#!/usr/bin/env bash
# Install mlops-template with DVC (the `bench` extra) and time `mlops data add` vs `dvc add` + `dvc push` vs `cp` (arguments go to snapshot_throughput.py).
source "$(dirname "$0")/../scripts/_uv.sh"
"$UV" sync --frozen --inexact --extra test --extra bench
unset PYTHONDONTWRITEBYTECODE
exec .venv/bin/python benchmarks/snapshot_throughput.py "$@"
