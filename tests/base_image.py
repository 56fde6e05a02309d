"""A stand-in for the official `python:3.11-slim-bookworm` image, made here where no image registry can be reached.

debootstrap makes a minimal Debian bookworm with python3, python3-venv and python3-pip (its
Python lives in /usr/bin, where the official image has /usr/local/bin), and `podman import`
stores it under the official name, so a rendered project's Dockerfile builds on it unchanged.
This machine's own certificate authorities go in too (the ones it added to its trust store),
so a build behind a TLS-inspecting proxy can reach the package index, as on the host.

The image is labelled with a hash of its recipe and kept in podman's storage: a later run on the
same machine finds it and makes nothing; a change of recipe (or of this machine's extra
authorities) makes it again. An image of that name without the label (the real official one,
pulled by someone) is used as it is.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

NAME = "docker.io/library/python:3.11-slim-bookworm"
LABEL = "mlops.base-recipe"
SUITE = "bookworm"
MIRROR = os.environ.get("MLOPS_DEBIAN_MIRROR", "http://deb.debian.org/debian")
PACKAGES = ["python3", "python3-venv", "python3-pip", "ca-certificates"]
# Only what a running image never reads: package lists and caches, documentation, translations.
TRIMMED = ["var/lib/apt/lists", "var/cache/apt", "usr/share/doc", "usr/share/man", "usr/share/info", "usr/share/locale"]
EXTRA_AUTHORITIES = Path("/usr/local/share/ca-certificates")
BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
CHANGES = [
    "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "ENV LANG=C.UTF-8",
    f"ENV SSL_CERT_FILE={BUNDLE}",  # uv, and Python's ssl
    f"ENV REQUESTS_CA_BUNDLE={BUNDLE}",  # pip
    'CMD ["python3"]',
]
_TIMEOUT = 1200


def _authorities() -> list[Path]:
    return sorted(EXTRA_AUTHORITIES.glob("*.crt")) if EXTRA_AUTHORITIES.is_dir() else []


def recipe_hash() -> str:
    """A hash of everything that makes the image: suite, mirror, packages, trimming, settings, extra authorities."""
    recipe = {"suite": SUITE, "mirror": MIRROR, "packages": PACKAGES, "trimmed": TRIMMED, "changes": CHANGES}
    digest = hashlib.sha256(json.dumps(recipe, sort_keys=True).encode())
    for path in _authorities():
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


def _label(env: dict[str, str]) -> str | None:
    """The recipe label of the image called NAME: None if there is no such image, "" if it has no label."""
    found = subprocess.run(
        ["podman", "image", "inspect", "--format", "{{json .Labels}}", NAME], env=env, capture_output=True, text=True
    )
    if found.returncode != 0:
        return None
    return (json.loads(found.stdout.strip() or "null") or {}).get(LABEL, "")


def ensure(env: dict[str, str], log: Path) -> str:
    """Make the base image unless this recipe's is there already; returns "cached", "official" or "made"."""
    wanted = recipe_hash()
    lock_path = Path(tempfile.gettempdir()) / "mlops-base-image.lock"
    with open(lock_path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two test runs at once make it once
        label = _label(env)
        if label == wanted:
            return "cached"
        if label == "":
            return "official"
        _make(env, wanted, log)
        return "made"


def _make(env: dict[str, str], recipe: str, log: Path) -> None:
    if os.geteuid() != 0:
        raise PermissionError(
            f"making the base image {NAME} takes root (debootstrap, chroot); run the tests as root once, "
            "or set MLOPS_SKIP_IMAGE_TEST=1 to skip the image test"
        )
    with tempfile.TemporaryDirectory(prefix="mlops-base-", dir="/var/tmp") as work:
        root = Path(work) / "rootfs"
        with open(log, "ab") as out:

            def run(*command: str, **kwargs) -> None:
                out.write(f"$ {' '.join(command)}\n".encode())
                out.flush()
                subprocess.run(command, stdout=out, stderr=subprocess.STDOUT, check=True, timeout=_TIMEOUT, **kwargs)

            debootstrap = shutil.which("debootstrap") or "/usr/sbin/debootstrap"
            run(debootstrap, "--variant=minbase", f"--include={','.join(PACKAGES)}", SUITE, str(root), MIRROR)
            authorities = _authorities()
            if authorities:
                target = root / EXTRA_AUTHORITIES.relative_to("/")
                target.mkdir(parents=True, exist_ok=True)
                for path in authorities:
                    shutil.copyfile(path, target / path.name)
                run("chroot", str(root), "update-ca-certificates")
            for part in TRIMMED:
                shutil.rmtree(root / part, ignore_errors=True)
                (root / part).mkdir(parents=True, exist_ok=True)
            changes = [arg for change in [*CHANGES, f"LABEL {LABEL}={recipe}"] for arg in ("--change", change)]
            tar = subprocess.Popen(["tar", "-C", str(root), "-c", "."], stdout=subprocess.PIPE)
            try:
                run("podman", "import", *changes, "-", NAME, stdin=tar.stdout, env=env)
            finally:
                tar.stdout.close()
                tar.wait()
