"""Named datasets: valid names, where they are stored, and the content hash that identifies a version."""

from __future__ import annotations

import hashlib
import re

from .errors import StorageError

_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")


def validate_name(name: str) -> str:
    """Reject names that could escape the storage root or collide with its layout."""
    if not isinstance(name, str) or not _NAME.fullmatch(name) or ".." in name:
        raise StorageError(
            f"dataset name {name!r} is invalid; use letters, digits, '_', '.' and '-' "
            "(no '/', no '..', not starting with '.')"
        )
    return name


def dataset_key(name: str) -> str:
    """The "current version" of a dataset, which the next step reads."""
    return f"datasets/{validate_name(name)}.parquet"


def content_id(data: bytes) -> str:
    """The id of a dataset version: a sha256 of its stored bytes, shortened for display."""
    return hashlib.sha256(data).hexdigest()[:16]
