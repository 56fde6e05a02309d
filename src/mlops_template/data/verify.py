"""Checking every stored snapshot against its id, and repairing one from an intact copy.

A snapshot's id is the hash of its bytes, so whether the stored object is still
that snapshot is a question with a yes-or-no answer: hash it. An object can be
overwritten in a bucket, cut short by a full disk or changed by hand; reads
refuse it then, and `mlops data verify` finds every such object at once. With
`repair`, a damaged snapshot is restored from a copy that still hashes to its
id: the dataset's current copy (`datasets/<name>`), or the file it was added
from. A partitioned snapshot is checked part by part against the digests its
manifest records, and a damaged or missing part is restored from any stored
file that hashes to that part's digest: the same part of the current copy
(`datasets/<name>/part-NNNNN.parquet`) or an intact part of another snapshot.
Nothing is written from bytes that do not match.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from mlops_template.data.hashing import FORMATS, digest_file
from mlops_template.data.layout import Snapshot, current_key, current_parts_folder
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
    parts: list[str] = field(default_factory=list)  # a partitioned snapshot's parts that are damaged or missing

    @property
    def problem(self) -> bool:
        return self.status in (DAMAGED, MISSING)


@dataclass(frozen=True)
class _Current:
    """A dataset's current copy as stored now: its key (the parts' folder when partitioned) and digest."""

    key: str
    digest: str
    parts: dict[str, str] = field(default_factory=dict)  # a partitioned copy's part keys, by their digest


def verify(store: SnapshotStore, name: str | None = None, *, repair: bool = False) -> list[Finding]:
    """Hash every snapshot (of `name`, or all) and every current copy; with `repair`, restore damaged snapshots."""
    snapshots = sorted(store.list(name), key=lambda s: (s.name, s.created_at))
    names = [name] if name else store.names()
    currents = {n: _current(store, n) for n in names}
    checked = [(snapshot, _check(store, snapshot)) for snapshot in snapshots]
    findings = []
    intact_parts = _intact_parts(checked)
    for snapshot, finding in checked:
        if finding.problem and repair:
            current = currents.get(snapshot.name)
            if snapshot.partitioned:
                finding = _repair_parts(store, snapshot, finding, current, intact_parts)
            else:
                finding = _repair(store, snapshot, finding, current)
        findings.append(finding)
    by_digest = {s.digest: s for s in snapshots}
    for dataset, current in currents.items():
        if current is None:
            continue
        held = by_digest.get(current.digest)
        uri = store.storage.uri(current.key)
        if held is not None and held.name == dataset:
            findings.append(Finding(uri, dataset, CURRENT, f"holds {held.ref}"))
        else:
            detail = "matches no snapshot: written by other means (a step that reads it stores it) or changed"
            findings.append(Finding(uri, dataset, UNKNOWN, detail))
    return findings


def _check(store: SnapshotStore, snapshot: Snapshot) -> Finding:
    if snapshot.partitioned:
        return _check_parts(store, snapshot)
    uri = store.uri(snapshot)
    if not store.storage.exists(snapshot.key):
        return Finding(uri, snapshot.ref, MISSING, "its bytes are gone")
    with activity(f"verifying {snapshot.ref}"):
        digest = store.stored_digest(snapshot.key)
    if digest != snapshot.digest:
        return Finding(uri, snapshot.ref, DAMAGED, f"its bytes hash to {digest[:16]}, not its id")
    return Finding(uri, snapshot.ref, OK)


def _check_parts(store: SnapshotStore, snapshot: Snapshot) -> Finding:
    """Each part of a partitioned snapshot against the digest its manifest records; the bad ones named."""
    from mlops_template.data.partitioned import parts_digest, stored_part_digests

    uri = store.uri(snapshot)
    parts = snapshot.partitions
    if not parts or parts_digest([p["digest"] for p in parts]) != snapshot.digest:
        return Finding(
            uri, snapshot.ref, DAMAGED, "its manifest's parts do not add up to its id; restore it from a backup"
        )
    present = set(store.storage.list(snapshot.key))
    keys = snapshot.part_keys
    here = [key for key in keys if key in present]
    with activity(f"verifying {snapshot.ref} ({len(parts):,} parts)"):
        digests = dict(zip(here, stored_part_digests(store.storage, here), strict=True))
    problems, bad = [], []
    for key, part in zip(keys, parts, strict=True):
        if key not in digests:
            problems.append(f"{part['file']} is gone")
        elif digests[key] != part["digest"]:
            problems.append(f"{part['file']} hashes to {digests[key][:16]}, not its recorded digest")
        else:
            continue
        bad.append(part["file"])
    if not bad:
        return Finding(uri, snapshot.ref, OK)
    if not here:
        return Finding(uri, snapshot.ref, MISSING, f"its {len(parts):,} parts are gone", bad)
    return Finding(uri, snapshot.ref, DAMAGED, f"{len(bad)} of {len(parts)} parts bad: " + "; ".join(problems), bad)


def _current(store: SnapshotStore, name: str) -> _Current | None:
    """The dataset's current copy, hashed: a file, or a folder of parts (digest over theirs, as a snapshot's id)."""
    for fmt in FORMATS:
        key = current_key(name, fmt)
        if store.storage.exists(key):
            return _Current(key, store.stored_digest(key))
    folder = current_parts_folder(name)
    keys = [k for k in store.storage.list(folder) if k.endswith(".parquet")]
    if not keys:
        return None
    from mlops_template.data.partitioned import parts_digest, stored_part_digests

    with activity(f"verifying the current copy of {name} ({len(keys):,} parts)"):
        digests = stored_part_digests(store.storage, keys)
    return _Current(folder, parts_digest(digests), dict(zip(digests, keys, strict=True)))


def _intact_parts(checked: list[tuple[Snapshot, Finding]]) -> dict[str, str]:
    """The key of an intact stored part by its digest, from every partitioned snapshot whose parts all verified."""
    found: dict[str, str] = {}
    for snapshot, finding in checked:
        if snapshot.partitioned and finding.status in (OK, DAMAGED):
            bad = set(finding.parts)
            for key, part in zip(snapshot.part_keys, snapshot.partitions, strict=True):
                if part["file"] not in bad:
                    found.setdefault(part["digest"], key)
    return found


def _repair(store: SnapshotStore, snapshot: Snapshot, finding: Finding, current: _Current | None) -> Finding:
    """Restore a damaged snapshot from the first intact copy: the current copy, else the file it was added from."""
    if current is not None and current.digest == snapshot.digest and current.key.endswith(f".{snapshot.format}"):
        store.storage.copy(current.key, snapshot.key)
        source = store.storage.uri(current.key)
    elif snapshot.source and Path(snapshot.source).is_file() and digest_file(snapshot.source) == snapshot.digest:
        store.storage.put_file(snapshot.source, snapshot.key)
        source = snapshot.source
    else:
        return Finding(finding.uri, finding.ref, finding.status, f"{finding.detail}; {_no_copy(snapshot)}")
    if store.stored_digest(snapshot.key) != snapshot.digest:
        raise StorageError(f"{finding.uri}: restored from {source}, but it still does not match; check the storage")
    return Finding(finding.uri, finding.ref, REPAIRED, f"restored from {source}")


def _repair_parts(
    store: SnapshotStore, snapshot: Snapshot, finding: Finding, current: _Current | None, intact: dict[str, str]
) -> Finding:
    """Restore each bad part from a stored file with its digest: the current copy's part, or another snapshot's."""
    if not snapshot.partitions:  # a manifest that does not add up: nothing to match parts against
        return finding
    sources = dict(intact)
    if current is not None:
        sources.update(current.parts)  # the current copy's parts first: the usual place for an intact copy
    bad = set(finding.parts)
    restored, left = [], []
    for key, part in zip(snapshot.part_keys, snapshot.partitions, strict=True):
        if part["file"] not in bad:
            continue
        source = sources.get(part["digest"])
        if source is None or source == key:
            left.append(part["file"])
            continue
        store.storage.copy(source, key)
        if store.stored_digest(key) != part["digest"]:
            raise StorageError(
                f"{store.storage.uri(key)}: restored from {store.storage.uri(source)}, but it still does not match; "
                "check the storage"
            )
        restored.append(f"{part['file']} from {store.storage.uri(source)}")
    if not left:
        return Finding(finding.uri, finding.ref, REPAIRED, "restored " + "; ".join(restored))
    done = f"restored {'; '.join(restored)}; " if restored else ""
    status = DAMAGED if restored else finding.status
    detail = (
        f"{finding.detail}; {done}no intact copy of {', '.join(left)} is left here: {_no_copy(snapshot, fix_only=True)}"
    )
    return Finding(finding.uri, finding.ref, status, detail, left)


def _no_copy(snapshot: Snapshot, *, fix_only: bool = False) -> str:
    wrote = f"the step that wrote it (run {snapshot.run_id})" if snapshot.run_id else "the step that wrote it"
    fix = f"restore it from a backup, or re-run {wrote}"
    return fix if fix_only else f"no intact copy is left here: {fix}"
