#!/usr/bin/env bash
# Install mlops-template with its test extras, lint, and run the test suite (arguments go to pytest).
source "$(dirname "$0")/_uv.sh"
source scripts/_postgres.sh
ensure_postgres
bash scripts/debian_packages.sh
"$UV" sync --frozen --extra test --compile-bytecode
bash scripts/airflow_env.sh
"$UV" run --frozen --no-sync ruff check src tests benchmarks
"$UV" run --frozen --no-sync ruff format --check --quiet src tests benchmarks
exec "$UV" run --frozen --no-sync pytest "$@"
