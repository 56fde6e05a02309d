"""Reading a project's runs and registry for `mlops runs`, `show` and `diff`, quickly.

These commands only read. On the default local store (a SQLite file) they
read it directly with :mod:`sqlite3`: importing MLflow alone takes longer
than the 2 s a question should take to answer. Every other store (a tracking
server, PostgreSQL) is read through MLflow's client, as is a SQLite file
whose tables are not the shape this reader knows. Both readers return runs
with the attributes of MLflow's own `Run` (`info`, `data`, `inputs`) and
versions with those of `ModelVersion`, so what is built on them is the same.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from mlops_template.config.load import Config, Environment
from mlops_template.tracking.connect import local_store_path

if TYPE_CHECKING:
    from mlflow import MlflowClient

# Read SQLite files directly when they have the tables below; tests turn it off to compare both readers.
DIRECT = True
_PAGE = 5000
_BATCH = 500  # run ids per `IN (...)`: SQLite allows 999 parameters by default
# Every table and column the direct reader uses; a store without one of them is read through MLflow.
_SCHEMA = {
    "experiments": ("experiment_id", "name", "lifecycle_stage"),
    "runs": ("run_uuid", "experiment_id", "status", "start_time", "end_time", "artifact_uri", "lifecycle_stage"),
    "tags": ("key", "value", "run_uuid"),
    "params": ("key", "value", "run_uuid"),
    "latest_metrics": ("key", "value", "is_nan", "run_uuid"),
    "inputs": ("input_uuid", "source_type", "source_id", "destination_type", "destination_id"),
    "input_tags": ("input_uuid", "name", "value"),
    "datasets": ("dataset_uuid", "name", "digest", "dataset_source_type", "dataset_source", "dataset_profile"),
    "model_versions": ("name", "version", "run_id", "source", "current_stage", "creation_time"),
    "model_version_tags": ("key", "value", "name", "version"),
    "registered_model_aliases": ("alias", "version", "name"),
}


@dataclass(frozen=True)
class Where:
    """Which runs a search keeps: every condition must hold."""

    has_tag: str | None = None  # the tag is set and not empty
    tags: dict[str, str] = field(default_factory=dict)  # tag = value
    status: str | None = None
    since: int | None = None  # started at or after, in epoch milliseconds
    id_prefix: str | None = None

    def mlflow_filter(self) -> str:
        parts = [f"tags.`{self.has_tag}` != ''"] if self.has_tag else []
        parts += [f"tags.`{key}` = '{value}'" for key, value in self.tags.items()]
        if self.status:
            parts.append(f"attributes.status = '{self.status}'")
        if self.since is not None:
            parts.append(f"attributes.start_time >= {int(self.since)}")
        if self.id_prefix:
            parts.append(f"attributes.run_id LIKE '{self.id_prefix}%'")
        return " and ".join(parts)


class Reader(Protocol):
    """What the read-only commands ask of a store."""

    def search(self, experiment_ids: list[str], where: Where, *, limit: int | None = None) -> list[Any]:
        """Active runs matching `where`, newest first (ties by id), the first `limit` of them."""

    def get(self, run_id: str) -> Any | None:
        """The run, or None when the store has no such run."""

    def experiments(self) -> list[tuple[str, str]]:
        """(id, name) of every active experiment."""

    def versions(self, name: str, run_id: str | None = None) -> list[Any]:
        """The model's versions (of one run), none when the model is not registered."""

    def aliases(self, name: str) -> dict[str, str]:
        """Alias -> version number of the model; empty when it is not registered."""

    def alias(self, name: str, alias: str) -> Any | None:
        """The version `alias` points at, or None."""

    def artifact(self, run_id: str, path: str) -> bytes | None:
        """An artifact's bytes, or None when the run has no such artifact."""


def open_reader(config: Config, env: Environment) -> tuple[Reader, str | None]:
    """A reader for `env`'s store and the project's experiment id (None: no run was ever tracked there).

    Call it inside :func:`environ.scope`: like :func:`tracking.connect`, it
    sets the S3 variables of `env` for reading snapshots and artifacts.
    """
    from mlops_template.config import environ

    path = _direct_path(env)
    if path is not None:
        try:
            conn = _connect(path)
        except sqlite3.Error:
            conn = None
        if conn is not None:
            environ.export(env)
            reader = SqliteReader(conn)
            return reader, reader.experiment_id(config.name)
    return mlflow_reader(config, env)


def mlflow_reader(config: Config, env: Environment) -> tuple[Reader, str]:
    """The reader through MLflow's client (any store), with the project's experiment created if need be."""
    import mlflow

    from mlops_template.tracking.connect import connect, quiet_mlflow

    quiet_mlflow()
    experiment_id = connect(config, env)
    return MlflowReader(mlflow.MlflowClient()), experiment_id


def _direct_path(env: Environment) -> Path | None:
    """The SQLite file to read directly, when `env` tracks (and registers) into one that exists."""
    if not DIRECT or not env.tracking_uri.startswith("sqlite:///"):
        return None
    if env.registry_uri and env.registry_uri != env.tracking_uri:
        return None
    path = local_store_path(env.tracking_uri)
    return path if path is not None and path.is_file() else None


def _connect(path: Path) -> sqlite3.Connection | None:
    """A read-only connection, or None when a table or column the reader needs is missing."""
    conn = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True, timeout=30)
    for table, columns in _SCHEMA.items():
        have = {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}
        if not set(columns) <= have:
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
    import mlflow

    return MlflowReader(mlflow.MlflowClient()).artifact(run_id, path)


# -- through MLflow's client -------------------------------------------------------------------


class MlflowReader:
    """The same questions through MLflow's client: any tracking store or server."""

    def __init__(self, client: MlflowClient) -> None:
        self._client = client

    def search(self, experiment_ids: list[str], where: Where, *, limit: int | None = None) -> list[Any]:
        found: list[Any] = []
        token = None
        while True:
            size = _PAGE if limit is None else min(_PAGE, limit - len(found))
            page = self._client.search_runs(
                experiment_ids,
                filter_string=where.mlflow_filter(),
                order_by=["attributes.start_time DESC"],
                max_results=size,
                page_token=token,
            )
            found.extend(page)
            token = page.token
            if not token or (limit is not None and len(found) >= limit):
                return found

    def get(self, run_id: str) -> Any | None:
        from mlflow.exceptions import MlflowException

        try:
            return self._client.get_run(run_id)
        except MlflowException as exc:
            if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "NOT_FOUND"):
                return None
            raise

    def experiments(self) -> list[tuple[str, str]]:
        return [(e.experiment_id, e.name) for e in self._client.search_experiments()]

    def versions(self, name: str, run_id: str | None = None) -> list[Any]:
        from mlflow.exceptions import MlflowException

        where = f"name='{name}'" + (f" and run_id='{run_id}'" if run_id is not None else "")
        try:
            found = self._client.search_model_versions(where)
        except MlflowException as exc:
            if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
                return []
            raise
        return sorted(found, key=lambda v: int(v.version))

    def aliases(self, name: str) -> dict[str, str]:
        from mlflow.exceptions import MlflowException

        try:
            found = self._client.get_registered_model(name).aliases
        except MlflowException as exc:
            if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "NOT_FOUND"):
                return {}
            raise
        return {alias: str(version) for alias, version in found.items()}

    def alias(self, name: str, alias: str) -> Any | None:
        from mlflow.exceptions import MlflowException

        try:
            return self._client.get_model_version_by_alias(name, alias)
        except MlflowException as exc:
            if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND"):
                return None
            raise

    def artifact(self, run_id: str, path: str) -> bytes | None:
        import tempfile

        from mlflow.exceptions import MlflowException

        with tempfile.TemporaryDirectory(prefix="mlops-artifact-") as tmp:
            try:
                local = self._client.download_artifacts(run_id, path, tmp)
            except (MlflowException, OSError):
                return None
            return Path(local).read_bytes()
