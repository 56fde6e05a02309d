#!/usr/bin/env bash
# Install mlops-template, render a demo project into ./demo and run its whole pipeline on the embedded default.
source "$(dirname "$0")/_uv.sh"
"$UV" sync --frozen --compile-bytecode
rm -rf demo
"$UV" run --frozen --no-sync mlops new iris-demo --directory demo
cd demo
"$UV" run --frozen --no-sync mlops run
echo
echo "Where to look:"
echo "  demo/data/            datasets, predictions and the exported champion model"
echo "  demo/mlruns.db        the MLflow store: cd demo && ../.venv/bin/mlops ui  →  http://127.0.0.1:5000"
echo "  demo/src/iris_demo/   the step code your team owns"
