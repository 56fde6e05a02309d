#!/usr/bin/env bash
# Run the project's image on the `local` environment, reading and writing this folder's data and MLflow store.
set -euo pipefail

usage() {
  cat <<'TEXT'
Usage: scripts/run_image.sh [--image NAME[:TAG]] [MLOPS ARGUMENTS...]

Run `mlops ARGUMENTS` (default: run, the whole pipeline) in the project's image on the
`local` environment. This folder is mounted at the same absolute path, so the SQLite
store's absolute artifact paths hold inside and out: datasets go to data/, runs and
models to mlruns.db and mlruns/, failed steps' logs to .mlops/logs/, and all outlive
the container. It runs as you (your uid and gid), so the files it writes stay yours.
The image's own code and mlops.toml run, not this folder's: build again after a change.

  --image NAME[:TAG]   the image [default: the project's name, tag latest]
  -h, --help           show this help

Examples: scripts/run_image.sh
          scripts/run_image.sh run --step train_model -P max_depth=3
          scripts/run_image.sh models
The engine is docker or podman, whichever is installed (CONTAINER_ENGINE to choose).
TEXT
}

# shellcheck source-path=SCRIPTDIR source=_engine.sh
source "$(dirname "${BASH_SOURCE[0]}")/_engine.sh"

image="$IMAGE_NAME:latest"
case "${1:-}" in
  -h | --help) usage; exit 0 ;;
  --image) image="${2:?--image needs a name}"; shift 2 ;;
esac
[ $# -gt 0 ] || set -- run

find_engine
as_caller
commit_env "$image"
mkdir -p data .mlops
# A read-only root with a writable /tmp, as a pod runs it.
"$ENGINE" run --rm --read-only --tmpfs /tmp "${CALLER[@]}" "${COMMIT_ENV[@]}" \
  --volume "$PROJECT_DIR:$PROJECT_DIR" \
  --volume "$PROJECT_DIR/.mlops:/app/.mlops" \
  --env HOME=/tmp \
  --env MLOPS_ENVIRONMENT=local \
  --env MLOPS_STORAGE="$PROJECT_DIR/data" \
  --env MLFLOW_TRACKING_URI="sqlite:///$PROJECT_DIR/mlruns.db" \
  "$image" "$@"
