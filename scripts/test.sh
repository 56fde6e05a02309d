#!/usr/bin/env bash
# Install mlops-template with its test extras and run the test suite (arguments go to pytest).
source "$(dirname "$0")/_uv.sh"
"$UV" sync --frozen --extra test
exec "$UV" run --frozen --no-sync pytest "$@"
