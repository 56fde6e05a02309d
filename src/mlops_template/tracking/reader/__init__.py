"""Reading a project's runs and registry for `mlops runs`, `show` and `diff`, quickly.

These commands only read. On the default local store (a SQLite file) whose
schema revision is one this package was tested on (:data:`sqlite.KNOWN_SCHEMAS`)
they read it directly with :mod:`sqlite3` (:mod:`.sqlite`): importing MLflow
alone takes longer than the 2 s a question should take to answer. Every other
store (a tracking server, PostgreSQL, a SQLite file of another MLflow version)
is read through MLflow's client (:mod:`.mlflow`). Both readers return runs
with the attributes of MLflow's own `Run` (`info`, `data`, `inputs`) and
versions with those of `ModelVersion`, so what is built on them is the same.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from mlops_template.config.load import Config, Environment
from mlops_template.tracking.connect import local_store_path

# Read SQLite files of a known schema directly; tests turn it off to compare both readers.
DIRECT = True


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
    from mlops_template.tracking.reader import mlflow
    from mlops_template.tracking.reader.sqlite import SqliteReader, connect_known

    path = _direct_path(env)
    if path is not None:
        try:
            conn = connect_known(path)
        except sqlite3.Error:
            conn = None
        if conn is not None:
            environ.export(env)
            reader = SqliteReader(conn)
            return reader, reader.experiment_id(config.name)
    return mlflow.mlflow_reader(config, env)


def _direct_path(env: Environment) -> Path | None:
    """The SQLite file to read directly, when `env` tracks (and registers) into one that exists."""
    if not DIRECT or not env.tracking_uri.startswith("sqlite:///"):
        return None
    if env.registry_uri and env.registry_uri != env.tracking_uri:
        return None
    path = local_store_path(env.tracking_uri)
    return path if path is not None and path.is_file() else None
