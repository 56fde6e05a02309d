#!/usr/bin/env bash
# Install mlops-template with its test extras, lint, check the layer contracts and dependencies, and run
# the test suite (other arguments go to pytest).
#   --quick   leave out what needs the container engine, Airflow, PostgreSQL or Chromium; CI runs all
source "$(dirname "$0")/_uv.sh"
quick=false
if [ "${1:-}" = "--quick" ]; then
  quick=true
  shift
fi
if ! $quick; then
  source scripts/_postgres.sh
  ensure_postgres
  bash scripts/debian_packages.sh
fi
"$UV" sync --frozen --extra test --compile-bytecode
$quick || bash scripts/airflow_env.sh
"$UV" run --frozen --no-sync ruff check src tests benchmarks scripts
"$UV" run --frozen --no-sync ruff format --check --quiet src tests benchmarks scripts
"$UV" run --frozen --no-sync lint-imports --no-cache
"$UV" run --frozen --no-sync deptry src
# One worker per core, up to four (each starts its own servers); the tests of one xdist_group (the image's)
# stay on one worker.
parallel=(-n auto --maxprocesses 4 --dist loadgroup)
if $quick; then
  exec "$UV" run --frozen --no-sync pytest "${parallel[@]}" -m "not container and not airflow and not postgres and not browser" "$@"
fi
exec "$UV" run --frozen --no-sync pytest "${parallel[@]}" "$@"
