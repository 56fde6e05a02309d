"""Checking every stored snapshot against its id, and repairing one from an intact copy.

A snapshot's id is the hash of its bytes, so whether the stored object is still
that snapshot is a question with a yes-or-no answer: hash it. An object can be
overwritten in a bucket, cut short by a full disk or changed by hand; reads
refuse it then, and `mlops data verify` finds every such object at once. With
`repair`, a damaged snapshot is restored from a copy that still hashes to its
id: the dataset's current copy (`datasets/<name>`), or the file it was added
from. Nothing is written from bytes that do not match.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from mlops_template.data.hashing import FORMATS, digest_file
from mlops_template.data.layout import Snapshot, current_key
from mlops_template.errors import StorageError
from mlops_template.progress import activity

if TYPE_CHECKING:
    from mlops_template.data.snapshots import SnapshotStore

OK, DAMAGED, MISSING, REPAIRED = "ok", "damaged", "missing", "repaired"
CURRENT, UNKNOWN = "current", "unknown"


@dataclass(frozen=True)
class Finding:
    """What was found at one stored object: a snapshot's bytes, or a dataset's current copy."""

    uri: str
    ref: str  # the snapshot (name:id), or the dataset's name for a current copy
    status: str  # ok, damaged, missing, repaired; for a current copy: current (of `snapshot`) or unknown
    detail: str = ""

    @property
    def problem(self) -> bool:
        return self.status in (DAMAGED, MISSING)


def verify(store: SnapshotStore, name: str | None = None, *, repair: bool = False) -> list[Finding]:
    """Hash every snapshot (of `name`, or all) and every current copy; with `repair`, restore damaged snapshots."""
    snapshots = store.list(name)
    names = [name] if name else store.names()
    currents = {n: _current_digest(store, n) for n in names}
    findings = []
    for snapshot in sorted(snapshots, key=lambda s: (s.name, s.created_at)):
        finding = _check(store, snapshot)
        if finding.problem and repair:
            finding = _repair(store, snapshot, finding, currents.get(snapshot.name))
        findings.append(finding)
    by_digest = {s.digest: s for s in snapshots}
    for dataset, current in currents.items():
        if current is None:
            continue
        key, digest = current
        held = by_digest.get(digest)
        uri = store.storage.uri(key)
        if held is not None and held.name == dataset:
            findings.append(Finding(uri, dataset, CURRENT, f"holds {held.ref}"))
        else:
            detail = "matches no snapshot: written by other means (a step that reads it stores it) or changed"
            findings.append(Finding(uri, dataset, UNKNOWN, detail))
    return findings


def _check(store: SnapshotStore, snapshot: Snapshot) -> Finding:
    uri = store.uri(snapshot)
    if not store.storage.exists(snapshot.key):
        return Finding(uri, snapshot.ref, MISSING, "its bytes are gone")
    with activity(f"verifying {snapshot.ref}"):
        digest = store.stored_digest(snapshot.key)
    if digest != snapshot.digest:
        return Finding(uri, snapshot.ref, DAMAGED, f"its bytes hash to {digest[:16]}, not its id")
    return Finding(uri, snapshot.ref, OK)


def _current_digest(store: SnapshotStore, name: str) -> tuple[str, str] | None:
    for fmt in FORMATS:
        key = current_key(name, fmt)
        if store.storage.exists(key):
            return key, store.stored_digest(key)
    return None


def _repair(store: SnapshotStore, snapshot: Snapshot, finding: Finding, current: tuple[str, str] | None) -> Finding:
    """Restore a damaged snapshot from the first intact copy: the current copy, else the file it was added from."""
    if current is not None and current[1] == snapshot.digest and current[0].endswith(f".{snapshot.format}"):
        store.storage.copy(current[0], snapshot.key)
        source = store.storage.uri(current[0])
    elif snapshot.source and Path(snapshot.source).is_file() and digest_file(snapshot.source) == snapshot.digest:
        store.storage.put_file(snapshot.source, snapshot.key)
        source = snapshot.source
    else:
        wrote = f"the step that wrote it (run {snapshot.run_id})" if snapshot.run_id else "the step that wrote it"
        fix = f"no intact copy is left here: restore it from a backup, or re-run {wrote}"
        return Finding(finding.uri, finding.ref, finding.status, f"{finding.detail}; {fix}")
    if store.stored_digest(snapshot.key) != snapshot.digest:
        raise StorageError(f"{finding.uri}: restored from {source}, but it still does not match; check the storage")
    return Finding(finding.uri, finding.ref, REPAIRED, f"restored from {source}")
