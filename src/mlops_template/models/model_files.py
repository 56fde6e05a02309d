"""A model's files as registered: their one sha256, and what MLflow adds to a download that is not the model."""

from __future__ import annotations

import hashlib
from pathlib import Path

# Written by MLflow into every download of `models:/<name>/<version>`, so not part of the model.
_DOWNLOAD_NOTES = {"registered_model_meta"}


def drop_download_notes(folder: str | Path) -> None:
    """Remove what MLflow writes into a download of `models:/<name>/<version>`, leaving the model's own files."""
    for note in _DOWNLOAD_NOTES:
        (Path(folder) / note).unlink(missing_ok=True)


def sha256(folder: str | Path) -> str:
    """A hash of every model file's relative path and bytes: changes if any of them changes."""
    digest = hashlib.sha256()
    root = Path(folder)
    for file in sorted(p for p in root.rglob("*") if p.is_file() and p.name not in _DOWNLOAD_NOTES):
        digest.update(file.relative_to(root).as_posix().encode() + b"\0")
        digest.update(hashlib.sha256(file.read_bytes()).digest())
    return digest.hexdigest()
