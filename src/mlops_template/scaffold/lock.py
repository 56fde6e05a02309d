"""A project's lock file (`uv.lock`): made with uv, which never downloads a Python of its own here.

The lock pins every package the project installs, the vendored library included (by hash), so a
teammate's laptop, CI and the image install the same versions. Making it needs a package
registry; where none can be reached, or uv is missing, the project is still made and the
outcome names the one command that makes the lock later.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

LOCK_FILE = "uv.lock"
# uv uses the Python it is given or finds; it must never fetch one of its own.
UV_ENVIRONMENT = {"UV_PYTHON_DOWNLOADS": "never"}
_NETWORK = re.compile(
    r"Failed to fetch|error sending request|tcp connect error|dns error|failed to lookup address|"
    r"Could not connect|Network is unreachable|timed out|operation timed out",
    re.IGNORECASE,
)
_TIMEOUT = 600


@dataclass(frozen=True)
class LockOutcome:
    """Whether `uv.lock` was written; if not, why and the command that writes it."""

    locked: bool
    reason: str = ""
    command: str = ""

    def message(self, root: Path) -> str:
        """One line for the user: what is missing, why, and what to run."""
        return f"{root / LOCK_FILE} was not written: {self.reason}; to write it later, run: {self.command}"


def lock_command(root: Path, *, uv: str = "uv", upgrade: str | None = None) -> list[str]:
    command = [uv, "lock", "--directory", str(root)]
    return [*command, "--upgrade-package", upgrade] if upgrade else command


def later_command(root: Path) -> str:
    """The command a person runs to make the lock, as they would type it."""
    return " ".join([*(f"{k}={v}" for k, v in UV_ENVIRONMENT.items()), *map(shlex.quote, lock_command(root))])


def find_uv() -> str | None:
    """The uv to run: `$UV` (set by `uv run`), on PATH, beside this Python, or the `uv` package's binary."""
    candidates = [os.environ.get("UV"), shutil.which("uv"), str(Path(sys.executable).parent / "uv")]
    for candidate in candidates:
        if candidate and os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    try:
        from uv import find_uv_bin  # the `uv` package from PyPI, installed for another scheme
    except ImportError:
        return None
    try:
        return find_uv_bin()
    except FileNotFoundError:
        return None


def uv_version(uv: str | None = None) -> str | None:
    """The version of uv (`0.9.5`), or None where it is missing or does not answer."""
    uv = uv or find_uv()
    if not uv:
        return None
    try:
        out = subprocess.run([uv, "--version"], capture_output=True, text=True, timeout=60, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    match = re.search(r"\d+\.\d+\.\d+", out)
    return match.group(0) if match else None


def lock_project(root: Path, *, upgrade: str | None = None) -> LockOutcome:
    """Write `root/uv.lock` with uv, resolving for every platform and Python the project allows.

    `upgrade` names a package to take afresh (the vendored library after it changed).
    """
    uv = find_uv()
    if uv is None:
        return LockOutcome(False, "uv is not installed (pip install uv)", later_command(root))
    env = {k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV"} | UV_ENVIRONMENT
    command = [*lock_command(root, uv=uv, upgrade=upgrade), "--python", sys.executable, "--quiet"]
    try:
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=_TIMEOUT)
    except subprocess.TimeoutExpired:
        return LockOutcome(False, f"uv lock took longer than {_TIMEOUT} s", later_command(root))
    if done.returncode == 0:
        return LockOutcome(True)
    return LockOutcome(False, _why(done.stderr), later_command(root))


def _why(stderr: str) -> str:
    """uv's error as one clause: an unreachable registry says so, with the URL and the deepest cause."""
    lines = [line.strip().removeprefix("error:").removeprefix("cause:").strip() for line in stderr.splitlines()]
    lines = [line for line in lines if line]
    if not lines:
        return "uv lock failed without a message"
    if _NETWORK.search(stderr):
        url = next((m.group(1) for line in lines if (m := re.search(r"(https?://\S+?)/?$", line))), None)
        where = f" ({url}: {lines[-1]})" if url else f" ({lines[-1]})"
        return "no package registry could be reached" + where
    return "uv lock failed: " + " / ".join(lines[:3])
