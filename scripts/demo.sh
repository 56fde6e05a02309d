#!/usr/bin/env bash
# Install mlops-template, render a demo project into ./demo and run its whole pipeline on the embedded default.
source "$(dirname "$0")/_uv.sh"
"$UV" sync --frozen --inexact --compile-bytecode
mlops="$PWD/.venv/bin/mlops"
rm -rf demo
"$mlops" new iris-demo --directory demo
cd demo
"$mlops" run
cat <<'TEXT'

Where to look:
  demo/data/                datasets, their snapshots, predictions and the exported champion model
  (cd demo && ../.venv/bin/mlops data ls)   every dataset version, with the run that made it
  demo/mlruns.db, mlruns/   the MLflow store: (cd demo && ../.venv/bin/mlops ui), then http://127.0.0.1:5000
  demo/src/iris_demo/       the step code a team owns and edits
TEXT
