"""Naming a snapshot as commands do: an id, a unique id prefix, `NAME:ID` or `NAME`; errors list the candidates."""

from __future__ import annotations

import json
import posixpath
from typing import TYPE_CHECKING

from mlops_template.data.hashing import ID_LENGTH, is_valid_name, validate_name
from mlops_template.data.layout import PREFIX, Snapshot, complete_manifests
from mlops_template.errors import StorageError

if TYPE_CHECKING:
    from mlops_template.data.snapshots import SnapshotStore

MIN_PREFIX = 4


def resolve_ref(store: SnapshotStore, ref: str) -> Snapshot:
    """A snapshot from `ID`, a unique id prefix, `NAME:ID`, or `NAME` (its current version).

    Errors list the candidates.
    """
    name, _, wanted = ref.rpartition(":")
    wanted = wanted.lower()
    if not name and not _looks_like_id(wanted) and is_valid_name(ref):
        return store.current(ref)
    if not _looks_like_id(wanted):
        raise StorageError(
            f"snapshot '{ref}' is neither an id nor a dataset name; give {MIN_PREFIX}-{ID_LENGTH} hex digits, "
            "NAME:ID or NAME (`mlops data ls` lists them)"
        )
    folder = f"{PREFIX}/{validate_name(name)}" if name else PREFIX
    manifests = complete_manifests(store.storage.list(folder))
    found: dict[str, list[str]] = {}
    for key in manifests:
        if posixpath.basename(key).startswith(wanted):
            found.setdefault(posixpath.basename(key).removesuffix(".json"), []).append(key)
    if not found and not name and is_valid_name(ref) and ref in {k.split("/")[1] for k in manifests}:
        return store.current(ref)  # a dataset whose name happens to look like an id
    if not found:
        raise StorageError(
            f"no snapshot matches '{ref}' in {store.storage.uri(folder)}; {known_datasets(store)} (`mlops data ls`)"
        )
    if len(found) > 1:
        candidates = ", ".join(f"{k.split('/')[1]}:{i}" for i, keys in sorted(found.items()) for k in keys)
        raise StorageError(f"snapshot '{ref}' is ambiguous; it matches {candidates}; give more digits")
    keys = next(iter(found.values()))
    manifests = [Snapshot.from_json(json.loads(b)) for b in store.storage.read_many(keys).values()]
    return max(manifests, key=lambda s: s.created_at)  # the same bytes under several names: the newest


def known_datasets(store: SnapshotStore) -> str:
    """The datasets that have snapshots, for an error that names none of them."""
    names = store.names()
    return f"datasets with snapshots: {', '.join(names)}" if names else "no snapshots are stored yet"


def _looks_like_id(text: str) -> bool:
    return MIN_PREFIX <= len(text) <= ID_LENGTH and all(c in "0123456789abcdef" for c in text)
