#!/usr/bin/env bash
# Run the project's image against a cloud environment (dev, prod): its bucket and tracking server.
set -euo pipefail

usage() {
  cat <<'TEXT'
Usage: scripts/run_image_cloud.sh --environment NAME [--profile PROFILE] [--image NAME[:TAG]] [MLOPS ARGUMENTS...]

Run `mlops ARGUMENTS` (default: run) in the project's image on an environment of
mlops.toml, e.g. dev or prod. AWS credentials reach the container, never on a command line:

  --profile PROFILE    ~/.aws is mounted read-only and AWS_PROFILE=PROFILE set
                       (also with AWS_PROFILE set, or with neither a profile nor
                       AWS_ACCESS_KEY_ID: the environment's aws_profile in mlops.toml)
  AWS_* variables      passed by name (--env NAME: the engine copies the value
                       from this shell), like MLFLOW_TRACKING_* and MLOPS_* ones

  --environment NAME   the environment [default: $MLOPS_ENVIRONMENT]
  --image NAME[:TAG]   the image [default: the project's name, tag latest]
  -h, --help           show this help

One step of a pipeline run, as a pod runs it:
  scripts/run_image_cloud.sh --environment dev run --step train_model --pipeline-run nightly-1
The engine is docker or podman, whichever is installed (CONTAINER_ENGINE to choose).
TEXT
}

# shellcheck source-path=SCRIPTDIR source=_engine.sh
source "$(dirname "${BASH_SOURCE[0]}")/_engine.sh"

environment="${MLOPS_ENVIRONMENT:-}"
profile="${AWS_PROFILE:-}"
image="$IMAGE_NAME:latest"
while [ $# -gt 0 ]; do
  case "$1" in
    --environment) environment="${2:?--environment needs a name}"; shift 2 ;;
    --profile) profile="${2:?--profile needs a name}"; shift 2 ;;
    --image) image="${2:?--image needs a name}"; shift 2 ;;
    -h | --help) usage; exit 0 ;;
    *) break ;;
  esac
done
[ -n "$environment" ] || die "name the environment to run on: --environment dev (or set MLOPS_ENVIRONMENT)"
[ "$environment" != local ] || die "the local environment runs with scripts/run_image.sh, which mounts this folder's data"
[ $# -gt 0 ] || set -- run

# Whether keys are set, without ever expanding them (a `bash -x` trace would show the value).
keys="${AWS_ACCESS_KEY_ID:+given}"
options=(--env HOME=/tmp --env MLOPS_ENVIRONMENT="$environment")
use_profile=false
if [ -n "$profile" ] || { [ -z "$keys" ] && [ -d "$HOME/.aws" ]; }; then
  use_profile=true
  [ -d "$HOME/.aws" ] || die "profile '$profile' needs $HOME/.aws, which does not exist; run aws configure --profile $profile"
  options+=(--volume "$HOME/.aws:/aws:ro" --env AWS_CONFIG_FILE=/aws/config --env AWS_SHARED_CREDENTIALS_FILE=/aws/credentials)
  [ -z "$profile" ] || options+=(--env AWS_PROFILE="$profile")
elif [ -z "$keys" ]; then
  echo "note: no AWS credentials given (no --profile, AWS_PROFILE, AWS_ACCESS_KEY_ID or ~/.aws); only a role where the container runs can provide them" >&2
fi

# Names only: the engine reads each value from this process's environment.
while IFS= read -r name; do
  case "$name" in
    MLOPS_ENVIRONMENT | MLOPS_GIT_COMMIT | AWS_PROFILE | AWS_CONFIG_FILE | AWS_SHARED_CREDENTIALS_FILE) ;;
    AWS_ACCESS_KEY_ID | AWS_SECRET_ACCESS_KEY | AWS_SESSION_TOKEN | AWS_SECURITY_TOKEN)
      [ "$use_profile" = true ] || options+=(--env "$name") ;;
    AWS_* | MLFLOW_TRACKING_* | MLFLOW_S3_* | MLOPS_*) options+=(--env "$name") ;;
  esac
done < <(compgen -e)

find_engine
as_caller
commit_env "$image"
# A read-only root with a writable /tmp, as a pod runs it.
"$ENGINE" run --rm --read-only --tmpfs /tmp "${CALLER[@]}" "${options[@]}" "${COMMIT_ENV[@]}" "$image" "$@"
