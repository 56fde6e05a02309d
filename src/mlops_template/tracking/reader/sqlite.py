"""MLflow's SQLite store read directly with :mod:`sqlite3`, for the schemas this reader was tested on.

The tables are read as MLflow's SQL store reads them (active runs, live
versions) into small frozen records with the attributes of MLflow's `Run` and
`ModelVersion`. Which tables and columns exist, and what they mean, is MLflow's
to change with each schema migration: a store is read here only when its
Alembic revision is in :data:`KNOWN_SCHEMAS`, the revisions the test comparing
this reader with MLflow's client ran on; any other is left to MLflow's client.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlops_template.tracking.connect import local_store_path
from mlops_template.tracking.reader import Where

# Alembic revisions of MLflow's SQL schema read directly: MLflow 3.17's. Add one only with the
# differential tests (tests/test_store_reader.py, tests/test_six_questions.py) passing on a store of it.
KNOWN_SCHEMAS = ("dc11669786a5",)
_BATCH = 500  # run ids per `IN (...)`: SQLite allows 999 parameters by default


def connect_known(path: Path) -> sqlite3.Connection | None:
    """A read-only connection, or None when the store's schema revision is not one of :data:`KNOWN_SCHEMAS`."""
    conn = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True, timeout=30)
    try:
        revisions = {row[0] for row in conn.execute("SELECT version_num FROM alembic_version")}
    except sqlite3.Error:  # no bookkeeping table: not a store MLflow made (or not yet)
        revisions = set()
    if len(revisions) != 1 or not revisions <= set(KNOWN_SCHEMAS):
        conn.close()
        return None
    return conn


# -- runs and versions as MLflow's entities present them -----------------------------------------


@dataclass(frozen=True)
class RunInfo:
    run_id: str
    experiment_id: str
    status: str
    start_time: int | None
    end_time: int | None
    artifact_uri: str


@dataclass(frozen=True)
class RunData:
    tags: dict[str, str]
    params: dict[str, str]
    metrics: dict[str, float]


@dataclass(frozen=True)
class InputTag:
    key: str
    value: str


@dataclass(frozen=True)
class Dataset:
    name: str
    digest: str
    source_type: str
    source: str
    profile: str | None


@dataclass(frozen=True)
class DatasetInput:
    dataset: Dataset
    tags: list[InputTag]


@dataclass(frozen=True)
class RunInputs:
    dataset_inputs: list[DatasetInput]


@dataclass(frozen=True)
class StoredRun:
    info: RunInfo
    data: RunData
    inputs: RunInputs


@dataclass(frozen=True)
class StoredVersion:
    name: str
    version: str
    run_id: str | None
    source: str
    tags: dict[str, str]
    creation_timestamp: int | None


# -- the direct reader -----------------------------------------------------------------------


class SqliteReader:
    """MLflow's SQLite tables, read as MLflow's SQL store reads them (active runs, live versions)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def experiment_id(self, name: str) -> str | None:
        row = self._conn.execute(
            "SELECT experiment_id FROM experiments WHERE name = ? AND lifecycle_stage = 'active'", (name,)
        ).fetchone()
        return None if row is None else str(row[0])

    def experiments(self) -> list[tuple[str, str]]:
        rows = self._conn.execute(
            "SELECT experiment_id, name FROM experiments WHERE lifecycle_stage = 'active' ORDER BY experiment_id"
        )
        return [(str(i), n) for i, n in rows]

    def search(self, experiment_ids: list[str], where: Where, *, limit: int | None = None) -> list[StoredRun]:
        sql = ["SELECT run_uuid FROM runs r WHERE r.lifecycle_stage = 'active'"]
        args: list[Any] = []
        sql.append(f"AND r.experiment_id IN ({', '.join('?' * len(experiment_ids))})")
        args += [int(e) for e in experiment_ids]
        if where.has_tag:
            sql.append(
                "AND EXISTS (SELECT 1 FROM tags t WHERE t.run_uuid = r.run_uuid AND t.key = ? AND t.value != '')"
            )
            args.append(where.has_tag)
        for key, value in where.tags.items():
            sql.append("AND EXISTS (SELECT 1 FROM tags t WHERE t.run_uuid = r.run_uuid AND t.key = ? AND t.value = ?)")
            args += [key, value]
        if where.status:
            sql.append("AND r.status = ?")
            args.append(where.status)
        if where.since is not None:
            sql.append("AND r.start_time >= ?")
            args.append(int(where.since))
        if where.id_prefix:
            sql.append("AND r.run_uuid LIKE ?")
            args.append(where.id_prefix.replace("%", "").replace("_", "") + "%")
        sql.append("ORDER BY r.start_time DESC, r.run_uuid")
        if limit is not None:
            sql.append("LIMIT ?")
            args.append(limit)
        ids = [row[0] for row in self._conn.execute(" ".join(sql), args)]
        return self._runs(ids)

    def get(self, run_id: str) -> StoredRun | None:
        found = self._runs([run_id])
        return found[0] if found else None

    def versions(self, name: str, run_id: str | None = None) -> list[StoredVersion]:
        sql = "SELECT name, version, run_id, source, creation_time FROM model_versions WHERE name = ?"
        args: list[Any] = [name]
        if run_id is not None:
            sql += " AND run_id = ?"
            args.append(run_id)
        rows = self._conn.execute(sql + " AND current_stage IS NOT 'Deleted_Internal' ORDER BY version", args)
        return [self._version(*row) for row in rows.fetchall()]

    def aliases(self, name: str) -> dict[str, str]:
        rows = self._conn.execute("SELECT alias, version FROM registered_model_aliases WHERE name = ?", (name,))
        return {alias: str(version) for alias, version in rows}

    def alias(self, name: str, alias: str) -> StoredVersion | None:
        number = self.aliases(name).get(alias)
        if number is None:
            return None
        return next((v for v in self.versions(name) if v.version == number), None)

    def artifact(self, run_id: str, path: str) -> bytes | None:
        row = self._conn.execute("SELECT artifact_uri FROM runs WHERE run_uuid = ?", (run_id,)).fetchone()
        if row is None or not row[0]:
            return None
        root = local_store_path(row[0])
        if root is None:  # artifacts elsewhere (a bucket): MLflow's artifact repositories know how to reach them
            return _download(run_id, path)
        try:
            return (root / path).read_bytes()
        except OSError:
            return None

    def _version(
        self, name: str, number: int, run_id: str | None, source: str | None, created: int | None
    ) -> StoredVersion:
        tags = dict(
            self._conn.execute(
                "SELECT key, value FROM model_version_tags WHERE name = ? AND version = ?", (name, number)
            ).fetchall()
        )
        return StoredVersion(name, str(number), run_id or None, source or "", tags, created)

    def _runs(self, ids: list[str]) -> list[StoredRun]:
        """Whole runs for `ids`, in that order: info, tags, params, latest metrics and dataset inputs."""
        infos: dict[str, RunInfo] = {}
        tags: dict[str, dict[str, str]] = {i: {} for i in ids}
        params: dict[str, dict[str, str]] = {i: {} for i in ids}
        metrics: dict[str, dict[str, float]] = {i: {} for i in ids}
        inputs: dict[str, list[DatasetInput]] = {i: [] for i in ids}
        for batch in _batches(ids):
            marks = ", ".join("?" * len(batch))
            for row in self._conn.execute(
                "SELECT run_uuid, experiment_id, status, start_time, end_time, artifact_uri "
                f"FROM runs WHERE run_uuid IN ({marks})",
                batch,
            ):
                infos[row[0]] = RunInfo(row[0], str(row[1]), row[2], row[3], row[4], row[5] or "")
            for run_id, key, value in self._conn.execute(
                f"SELECT run_uuid, key, value FROM tags WHERE run_uuid IN ({marks})", batch
            ):
                tags[run_id][key] = value
            for run_id, key, value in self._conn.execute(
                f"SELECT run_uuid, key, value FROM params WHERE run_uuid IN ({marks})", batch
            ):
                params[run_id][key] = value
            for run_id, key, value, is_nan in self._conn.execute(
                f"SELECT run_uuid, key, value, is_nan FROM latest_metrics WHERE run_uuid IN ({marks})", batch
            ):
                metrics[run_id][key] = float("nan") if is_nan else float(value)
            for run_id, entry in self._inputs(batch, marks):
                inputs[run_id].append(entry)
        return [
            StoredRun(infos[i], RunData(tags[i], params[i], metrics[i]), RunInputs(inputs[i]))
            for i in ids
            if i in infos
        ]

    def _inputs(self, batch: list[str], marks: str) -> Iterator[tuple[str, DatasetInput]]:
        rows = self._conn.execute(
            "SELECT i.destination_id, i.input_uuid, d.name, d.digest, d.dataset_source_type, d.dataset_source, "
            "d.dataset_profile FROM inputs i JOIN datasets d ON d.dataset_uuid = i.source_id "
            f"WHERE i.source_type = 'DATASET' AND i.destination_type = 'RUN' AND i.destination_id IN ({marks})",
            batch,
        ).fetchall()
        uuids = [row[1] for row in rows]
        tags: dict[str, list[InputTag]] = {u: [] for u in uuids}
        for part in _batches(uuids):
            for uuid, key, value in self._conn.execute(
                f"SELECT input_uuid, name, value FROM input_tags WHERE input_uuid IN ({', '.join('?' * len(part))})",
                part,
            ):
                tags[uuid].append(InputTag(key, value))
        for run_id, uuid, name, digest, source_type, source, profile in rows:
            yield run_id, DatasetInput(Dataset(name, digest, source_type, source, profile), tags[uuid])


def _batches(items: list[str]) -> Iterable[list[str]]:
    for start in range(0, len(items), _BATCH):
        yield items[start : start + _BATCH]


def _download(run_id: str, path: str) -> bytes | None:
    from mlops_template.tracking.reader.mlflow import download

    return download(run_id, path)
