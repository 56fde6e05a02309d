# Sourced by the other scripts: find uv, or install it into .tools/ (works where pip may not touch the system Python).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export MLFLOW_DISABLE_TELEMETRY=true
if command -v uv >/dev/null 2>&1; then
  UV=uv
else
  if [ ! -x .tools/bin/uv ]; then
    python3 -m venv .tools
    .tools/bin/python -m pip install --quiet --disable-pip-version-check "uv>=0.5"
  fi
  UV=.tools/bin/uv
fi
