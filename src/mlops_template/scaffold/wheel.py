"""This library as a wheel, written from the installed package: what a project vendors so it installs anywhere.

No package index has `mlops-template`; a project carries the wheel of the exact library it was
made with under `vendor/`. The wheel is made from the package files and the installed
distribution's metadata, so it needs no build tool or network, and it is byte for byte the
same for the same code (fixed timestamps and order), so a lock that hashes it stays valid.
"""

from __future__ import annotations

import base64
import hashlib
import zipfile
from importlib import metadata
from pathlib import Path

from mlops_template.errors import ProjectError

DISTRIBUTION = "mlops-template"
_PACKAGE = "mlops_template"
_STAMP = (1980, 1, 1, 0, 0, 0)  # the earliest time a zip can hold: no build time in the bytes
_SKIPPED_PARTS = {"__pycache__"}
_SKIPPED_SUFFIXES = {".pyc", ".pyo"}


def wheel_name(version: str | None = None) -> str:
    """The wheel's file name, e.g. `mlops_template-0.1.0-py3-none-any.whl`."""
    return f"{_PACKAGE}-{version or library_version()}-py3-none-any.whl"


def wheel_version(wheel: Path) -> str:
    """The version a wheel's file name carries (name-version-…whl); refused when the name is not a wheel's."""
    parts = wheel.name.split("-")
    if len(parts) < 2 or not wheel.name.endswith(".whl"):
        raise ProjectError(f"{wheel} is not a wheel file name (name-version-…whl); pass an mlops-template wheel")
    return parts[1]


def library_version() -> str:
    return _distribution().version


def write_wheel(folder: Path) -> Path:
    """Write the installed library's wheel into `folder` and return its path."""
    dist = _distribution()
    version = dist.version
    info = f"{_PACKAGE}-{version}.dist-info"
    entries: list[tuple[str, bytes]] = [
        (f"{_PACKAGE}/{path.relative_to(_package_dir()).as_posix()}", path.read_bytes()) for path in _package_files()
    ]
    entries.append((f"{info}/METADATA", _metadata_text(dist).encode()))
    entries.append(
        (f"{info}/WHEEL", b"Wheel-Version: 1.0\nGenerator: mlops-template\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
    )
    entry_points = dist.read_text("entry_points.txt")
    if entry_points:
        entries.append((f"{info}/entry_points.txt", entry_points.encode()))
    record = "".join(f"{name},sha256={_digest(data)},{len(data)}\n" for name, data in entries)
    entries.append((f"{info}/RECORD", (record + f"{info}/RECORD,,\n").encode()))

    folder.mkdir(parents=True, exist_ok=True)
    target = folder / wheel_name(version)
    partial = target.with_name(target.name + ".partial")
    with zipfile.ZipFile(partial, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, data in entries:
            item = zipfile.ZipInfo(name, date_time=_STAMP)
            item.external_attr = 0o644 << 16
            item.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(item, data)
    partial.replace(target)
    return target


def _distribution() -> metadata.Distribution:
    try:
        return metadata.distribution(DISTRIBUTION)
    except metadata.PackageNotFoundError as exc:
        raise ProjectError(
            f"{DISTRIBUTION} is not installed as a package here, so its wheel cannot be vendored; "
            f"install it (pip install -e <its checkout>) and run the command again"
        ) from exc


def _package_dir() -> Path:
    return Path(__file__).resolve().parents[1]


def _package_files() -> list[Path]:
    """Every file of the package, in a fixed order, without compiled bytecode."""
    return source_files(_package_dir())


def source_files(root: Path) -> list[Path]:
    """Every file below `root`, in a fixed order, without compiled bytecode."""
    return sorted(
        path
        for path in root.rglob("*")
        if path.is_file()
        and not _SKIPPED_PARTS.intersection(path.relative_to(root).parts)
        and path.suffix not in _SKIPPED_SUFFIXES
    )


def _metadata_text(dist: metadata.Distribution) -> str:
    text = dist.read_text("METADATA")
    if not text:
        raise ProjectError(f"{DISTRIBUTION}'s installed metadata has no METADATA file; reinstall it")
    return text


def _digest(data: bytes) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
