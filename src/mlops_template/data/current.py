"""A dataset's current version: `datasets/<name>.<fmt>` (or a folder of parts), one copy of a stored snapshot.

Steps read a dataset by name through it, and `mlops data get NAME` gives it;
it is always a byte-for-byte copy of a snapshot, found again by hashing it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mlops_template.data.hashing import FORMATS
from mlops_template.data.layout import Snapshot, current_key, current_parts_folder
from mlops_template.data.refs import known_datasets
from mlops_template.errors import StorageError

if TYPE_CHECKING:
    from mlops_template.data.snapshots import SnapshotStore


def set_current(store: SnapshotStore, snapshot: Snapshot) -> None:
    """Make `datasets/<name>` a copy of this snapshot (a server-side copy on S3, in-kernel locally).

    Nothing is copied when it already is one.
    """
    if snapshot.partitioned:
        folder = current_parts_folder(snapshot.name)
        wanted = {f"{folder}/{part['file']}" for part in snapshot.partitions}
        for key in store.storage.list(folder):
            if key not in wanted:
                store.storage.delete(key)
        for source, part in zip(snapshot.part_keys, snapshot.partitions, strict=True):
            key = f"{folder}/{part['file']}"
            if not _holds(store, key, source, part["digest"]):
                store.storage.copy(source, key)
    else:
        key = current_key(snapshot.name, snapshot.format)
        if not _holds(store, key, snapshot.key, snapshot.digest):
            store.storage.copy(snapshot.key, key)
    drop_other_formats(store, snapshot)


def _holds(store: SnapshotStore, key: str, source: str, digest: str) -> bool:
    """Whether `key` holds `source`'s bytes: asked of the storage first (sizes, ETags), hashed only if it cannot tell."""
    same = store.storage.same_copy(key, source)
    return store.stored_digest(key) == digest if same is None else same


def drop_other_formats(store: SnapshotStore, snapshot: Snapshot) -> None:
    """A dataset has one current copy: writing a CSV version removes a parquet one, a partitioned one both, and back."""
    for other in FORMATS:
        if snapshot.partitioned or other != snapshot.format:
            store.storage.delete(current_key(snapshot.name, other))
    if not snapshot.partitioned:
        store.storage.delete(current_parts_folder(snapshot.name))


def current(store: SnapshotStore, name: str) -> Snapshot:
    """The snapshot that `datasets/<name>` holds now (found by hashing it)."""
    for fmt in FORMATS:
        key = current_key(name, fmt)
        if store.storage.exists(key):
            found = store._complete(name, store.stored_digest(key))
            if found is None:
                raise StorageError(
                    f"{store.storage.uri(key)} is not a stored snapshot yet; a step that reads it stores one, "
                    f"or `mlops data add {store.storage.uri(key)} --name {name}`"
                )
            return found
    parts = [k for k in store.storage.list(current_parts_folder(name)) if k.endswith(".parquet")]
    if parts:
        from mlops_template.data.partitioned import parts_digest, stored_part_digests

        found = store._complete(name, parts_digest(stored_part_digests(store.storage, parts)))
        if found is None:
            raise StorageError(
                f"{store.storage.uri(current_parts_folder(name))}/ does not hold a stored snapshot's parts; "
                "run the step that writes it again"
            )
        return found
    raise StorageError(f"dataset '{name}' has no current version; {known_datasets(store)}")
