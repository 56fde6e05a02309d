"""What a snapshot is and where its files are: the manifest record, and the keys under a storage root.

Layout under an environment's storage root::

    snapshots/<name>/<id>.parquet|csv   the bytes, never rewritten; id = BLAKE3 of them
    snapshots/<name>/<id>/part-NNNNN.parquet  or a partitioned snapshot's parts; id = BLAKE3 over their digests
    snapshots/<name>/<id>.json          the manifest, written last: a snapshot without one is incomplete
    datasets/<name>.parquet|csv         a copy of the current version, for the next step
    datasets/<name>/part-NNNNN.parquet  or of a partitioned one's parts
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from mlops_template.data.hashing import FORMATS, validate_name
from mlops_template.errors import StorageError

PREFIX = "snapshots"
PART = "part-{:05d}.parquet"


@dataclass(frozen=True)
class Snapshot:
    """One stored dataset version and its manifest."""

    name: str
    id: str
    digest: str
    format: str
    bytes: int
    rows: int
    columns: list[dict[str, Any]]
    created_at: str
    run_id: str | None = None
    step: str | None = None
    source: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ref(self) -> str:
        """How commands name it unambiguously: `name:id`."""
        return f"{self.name}:{self.id}"

    @property
    def key(self) -> str:
        """The data file's key; for a partitioned snapshot, the folder of its parts."""
        if self.partitioned:
            return parts_folder(self.name, self.id)
        return data_key(self.name, self.id, self.format)

    @property
    def partitions(self) -> list[dict[str, Any]]:
        """A partitioned snapshot's parts in order, `{file, rows, digest, bytes}` each; empty for a single file."""
        return list(self.extra.get("partitions", []))

    @property
    def partitioned(self) -> bool:
        return "partitions" in self.extra

    @property
    def part_keys(self) -> list[str]:
        """The keys of its data: the parts of a partitioned snapshot, else its one file."""
        if not self.partitioned:
            return [self.key]
        return [f"{self.key}/{part['file']}" for part in self.partitions]

    def column(self, name: str) -> dict[str, Any] | None:
        return next((c for c in self.columns if c["name"] == name), None)

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out.update(out.pop("extra"))
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Snapshot:
        known = {f for f in cls.__dataclass_fields__ if f != "extra"}
        return cls(
            **{k: v for k, v in data.items() if k in known}, extra={k: v for k, v in data.items() if k not in known}
        )


def data_key(name: str, snapshot_id: str, fmt: str) -> str:
    return f"{PREFIX}/{validate_name(name)}/{snapshot_id}.{fmt}"


def manifest_key(name: str, snapshot_id: str) -> str:
    return f"{PREFIX}/{validate_name(name)}/{snapshot_id}.json"


def parts_folder(name: str, snapshot_id: str) -> str:
    return f"{PREFIX}/{validate_name(name)}/{snapshot_id}"


def current_key(name: str, fmt: str) -> str:
    return f"datasets/{validate_name(name)}.{fmt}"


def current_parts_folder(name: str) -> str:
    """Where the current version of a partitioned dataset keeps copies of its parts."""
    return f"datasets/{validate_name(name)}"


def file_format(path: str | os.PathLike[str]) -> str:
    """`parquet` or `csv`, from a file name's suffix."""
    suffix = Path(path).suffix.lower()
    fmt = {".parquet": "parquet", ".pq": "parquet", ".csv": "csv"}.get(suffix)
    if fmt is None:
        raise StorageError(f"{path}: unsupported file type '{suffix or '(none)'}'; add a .csv or .parquet file")
    return fmt


def complete_manifests(keys: list[str]) -> list[str]:
    """The manifest keys among `keys` whose data file is there too."""
    present = set(keys)
    folders = {k.rsplit("/", 1)[0] for k in keys if k.count("/") == 3}  # snapshots/<name>/<id>/part-…
    return [
        k
        for k in keys
        if _is_manifest(k)
        and (
            any(k.removesuffix(".json") + f".{fmt}" in present for fmt in FORMATS) or k.removesuffix(".json") in folders
        )
    ]


def _is_manifest(key: str) -> bool:
    parts = key.split("/")
    return len(parts) == 3 and parts[0] == PREFIX and parts[2].endswith(".json") and not parts[2].startswith(".")
