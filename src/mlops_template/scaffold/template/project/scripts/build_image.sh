#!/usr/bin/env bash
# Build the project's image, tagged with the full commit SHA (the tag the DAG runs) and latest.
set -euo pipefail

usage() {
  cat <<'TEXT'
Usage: scripts/build_image.sh [--allow-dirty] [--image NAME] [--push REPOSITORY]

Build the project's image from its Dockerfile and tag it NAME:<full commit SHA>, the tag
the DAG runs, and NAME:latest. A work tree with uncommitted changes is refused, since no
commit would name the code in the image.

  --allow-dirty        build uncommitted changes too; the tag is then <SHA>-dirty
  --image NAME         the image's name [default: the project's name]
  --push REPOSITORY    also tag REPOSITORY:<SHA> and REPOSITORY:latest and push both
                       (e.g. an ECR repository URI; log in to its registry first)
  -h, --help           show this help

The engine is docker or podman, whichever is installed (CONTAINER_ENGINE to choose).
TEXT
}

# shellcheck source-path=SCRIPTDIR source=_engine.sh
source "$(dirname "${BASH_SOURCE[0]}")/_engine.sh"

allow_dirty=false
push=""
while [ $# -gt 0 ]; do
  case "$1" in
    --allow-dirty) allow_dirty=true ;;
    --image) IMAGE_NAME="${2:?--image needs a name}"; shift ;;
    --push) push="${2:?--push needs a repository}"; shift ;;
    -h | --help) usage; exit 0 ;;
    *) usage >&2; die "unknown argument '$1'" ;;
  esac
  shift
done

sha="$(git rev-parse --verify --quiet 'HEAD^{commit}')" \
  || die "$PROJECT_DIR has no git commit to tag the image with; commit the code first"
tag="$sha"
changes="$(git status --porcelain --untracked-files=normal)"
if [ -n "$changes" ]; then
  if [ "$allow_dirty" != true ]; then
    echo "$changes" | head -n 10 >&2
    die "the work tree has uncommitted changes (above), so commit $sha is not the code to build; commit them, or pass --allow-dirty"
  fi
  tag="$sha-dirty"
fi
[ -f uv.lock ] || die "uv.lock is missing: the image installs exactly what it pins; run UV_PYTHON_DOWNLOADS=never uv lock, commit it, build again"

find_engine
# BASE_IMAGE: another base than the official python:3.11-slim-bookworm (a registry mirror's copy).
base=()
[ -z "${BASE_IMAGE:-}" ] || base=(--build-arg "BASE_IMAGE=$BASE_IMAGE")
# The commit as a label given here, not a build argument: a layer cache that ignores
# argument values would otherwise keep an older commit's label.
"$ENGINE" build "${base[@]}" --label org.opencontainers.image.revision="$tag" \
  --tag "$IMAGE_NAME:$tag" --tag "$IMAGE_NAME:latest" .
echo "built $IMAGE_NAME:$tag and $IMAGE_NAME:latest"

if [ -n "$push" ]; then
  for name in "$tag" latest; do
    "$ENGINE" tag "$IMAGE_NAME:$tag" "$push:$name"
    "$ENGINE" push "$push:$name"
  done
  echo "pushed $push:$tag and $push:latest"
fi
