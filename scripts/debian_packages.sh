#!/usr/bin/env bash
# Install the Debian packages the tests use, where a command is missing: the container engine and
# its runtime (podman, buildah, runc), debootstrap (makes the base image), shellcheck, curl (the README's
# request to `mlops serve`), chromium (the browser test of `mlops ui`). Idempotent.
set -euo pipefail

if [ "${1:-}" = "-h" ] || [ "${1:-}" = "--help" ]; then
  echo "Usage: scripts/debian_packages.sh   install podman, buildah, runc, debootstrap, shellcheck, curl, chromium where missing (as root or via sudo)"
  exit 0
fi

# command → the package that provides it
declare -A PACKAGES=(
  [podman]=podman
  [buildah]=buildah
  [runc]=runc
  [debootstrap]=debootstrap
  [shellcheck]=shellcheck
  [slirp4netns]=slirp4netns
  [fuse-overlayfs]=fuse-overlayfs
  [curl]=curl
  [chromium]=chromium
)
missing=()
for command in "${!PACKAGES[@]}"; do
  command -v "$command" >/dev/null 2>&1 || PATH="$PATH:/usr/sbin:/sbin" command -v "$command" >/dev/null 2>&1 \
    || missing+=("${PACKAGES[$command]}")
done
[ ${#missing[@]} -gt 0 ] || exit 0

if [ "$(id -u)" = 0 ]; then
  as_root=()
elif command -v sudo >/dev/null 2>&1; then
  as_root=(sudo)
else
  echo "error: the tests need ${missing[*]}; install them as root: apt-get install ${missing[*]}" >&2
  exit 1
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "error: the tests need ${missing[*]}, and this is not a Debian-like system with apt-get; install them by hand" >&2
  exit 1
fi
echo "installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
# Another apt may be running (a parallel install): wait for its lock rather than fail.
"${as_root[@]}" apt-get -o DPkg::Lock::Timeout=600 update -q
"${as_root[@]}" apt-get -o DPkg::Lock::Timeout=600 install -y -q --no-install-recommends "${missing[@]}"
