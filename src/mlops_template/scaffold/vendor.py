"""`mlops vendor`: put the installed library into a project's `vendor/` and lock the project to it.

A project installs `mlops-template` from the wheel under `vendor/`, named in `pyproject.toml` as
the package's source (`[tool.uv.sources]`). After upgrading the library, this one command
replaces the wheel, points `pyproject.toml` at it and updates `uv.lock`.
"""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from mlops_template.errors import ProjectError
from mlops_template.scaffold.lock import lock_project
from mlops_template.scaffold.wheel import DISTRIBUTION, library_version, wheel_name, wheel_version, write_wheel

VENDOR = "vendor"
_DEPENDENCY = re.compile(r'"mlops-template(?:\s*[=<>!~][^"]*)?"')
_SOURCE = re.compile(r'^(mlops-template\s*=\s*\{\s*path\s*=\s*")[^"]*(")', re.MULTILINE)


@dataclass(frozen=True)
class Vendored:
    """What `vendor_library` did: the wheel written, its version, the version it replaced, whether it locked."""

    wheel: Path
    version: str
    previous: str | None
    locked: bool


def vendor_library(root: Path, *, lock: bool = True, wheel: Path | None = None) -> Vendored:
    """Write this library's wheel (or copy `wheel`) into `root/vendor/`, make `pyproject.toml` require it, re-lock."""
    pyproject = root / "pyproject.toml"
    try:
        text = pyproject.read_text(encoding="utf-8")
    except OSError as exc:
        raise ProjectError(f"cannot read {pyproject} ({exc}); run this in a project made by `mlops new`") from exc
    version = wheel_version(wheel) if wheel is not None else library_version()
    relative = f"{VENDOR}/{wheel_name(version)}"
    text, found_dependency = _DEPENDENCY.subn(f'"{DISTRIBUTION}=={version}"', text, count=1)
    text, found_source = _SOURCE.subn(rf"\g<1>{relative}\g<2>", text, count=1)
    if not (found_dependency and found_source):
        raise ProjectError(
            f'{pyproject} does not name the vendored library; add "{DISTRIBUTION}=={version}" to [project] '
            f'dependencies and, under [tool.uv.sources], {DISTRIBUTION} = {{ path = "{relative}" }}'
        )
    folder = root / VENDOR
    previous = sorted(folder.glob("mlops_template-*.whl")) if folder.is_dir() else []
    if wheel is None:
        wheel = write_wheel(folder)
    else:
        folder.mkdir(parents=True, exist_ok=True)
        wheel = Path(shutil.copyfile(wheel, folder / wheel_name(version)))
    for old in previous:
        if old != wheel:
            old.unlink()
    pyproject.write_text(text, encoding="utf-8")
    if lock:
        outcome = lock_project(root, upgrade=DISTRIBUTION)
        if not outcome.locked:
            raise ProjectError(f"{wheel.relative_to(root)} and pyproject.toml are updated, but {outcome.message(root)}")
    return Vendored(wheel, version, _version_of(previous[0]) if previous else None, lock)


def _version_of(wheel: Path) -> str:
    return wheel.name.split("-")[1]
