"""When the read-only commands read a SQLite store directly, and when they go through MLflow's client."""

from __future__ import annotations

import json
import shutil
import sqlite3
from contextlib import closing
from pathlib import Path

import pytest
from click.testing import CliRunner

from mlops_template.cli.main import main
from mlops_template.config.load import Environment
from mlops_template.tracking import reader as store_reader
from mlops_template.tracking.reader import mlflow as client_reader
from mlops_template.tracking.reader import sqlite as sqlite_reader

# A revision no MLflow the tests ran on has made: a store migrated by a later MLflow.
LATER_REVISION = "0a1b2c3d4e5f"


def environment(**values) -> Environment:
    return Environment(name="local", storage="data", **values)


def store_at(path: Path, revision: str | None) -> Path:
    """A SQLite file with MLflow's bookkeeping table at `revision` (None: without that table)."""
    with closing(sqlite3.connect(path)) as conn, conn:
        conn.execute("CREATE TABLE runs (run_uuid)")
        if revision is not None:
            conn.execute("CREATE TABLE alembic_version (version_num)")
            conn.execute("INSERT INTO alembic_version VALUES (?)", (revision,))
    return path


def test_only_a_store_of_a_known_schema_revision_is_read_directly(tmp_path: Path):
    [known] = sqlite_reader.KNOWN_SCHEMAS
    assert isinstance(sqlite_reader.connect_known(store_at(tmp_path / "known.db", known)), sqlite3.Connection)
    assert sqlite_reader.connect_known(store_at(tmp_path / "later.db", LATER_REVISION)) is None
    assert sqlite_reader.connect_known(store_at(tmp_path / "bare.db", None)) is None


def test_only_an_existing_sqlite_file_holding_runs_and_registry_is_read_directly(tmp_path: Path):
    db = tmp_path / "mlruns.db"
    uri = f"sqlite:///{db}"
    assert store_reader._direct_path(environment(tracking_uri=uri)) is None  # not made yet: MLflow creates it
    db.touch()
    assert store_reader._direct_path(environment(tracking_uri=uri)) == db.resolve()
    assert store_reader._direct_path(environment(tracking_uri=uri, registry_uri="http://127.0.0.1:1")) is None
    assert store_reader._direct_path(environment(tracking_uri="http://127.0.0.1:5000")) is None


def test_a_store_of_an_unknown_schema_revision_is_read_through_mlflow_with_the_same_answers(
    trained_copy: Path, monkeypatch: pytest.MonkeyPatch
):
    opened: list[str] = []
    direct_init = sqlite_reader.SqliteReader.__init__
    client_open = client_reader.mlflow_reader

    def spy_direct(self, conn):
        opened.append("sqlite")
        direct_init(self, conn)

    def spy_client(config, env):
        opened.append("mlflow")
        return client_open(config, env)

    monkeypatch.setattr(sqlite_reader.SqliteReader, "__init__", spy_direct)
    monkeypatch.setattr(client_reader, "mlflow_reader", spy_client)
    questions = [("runs", "--json"), ("show", "latest", "--json"), ("show", "champion", "--json"), ("models", "--json")]

    def answers() -> dict[tuple[str, ...], object]:
        found = {}
        for args in questions:
            result = CliRunner().invoke(main, [*args, "--project", str(trained_copy)], catch_exceptions=False)
            assert result.exit_code == 0, result.output
            found[args] = json.loads(result.output)
        return found

    direct = answers()
    assert direct[("runs", "--json")] and set(opened) == {"sqlite"}
    # The store as a later MLflow leaves it: migrated to a revision this reader was never tested on.
    with closing(sqlite3.connect(trained_copy / "mlruns.db")) as conn, conn:
        conn.execute("UPDATE alembic_version SET version_num = ?", (LATER_REVISION,))
    monkeypatch.setattr("mlflow.store.db.utils._get_latest_schema_revision", lambda: LATER_REVISION)
    opened.clear()
    assert answers() == direct
    assert opened == ["mlflow"] * len(questions)


def test_a_store_of_an_older_schema_revision_is_refused_with_mlflow_s_upgrade_advice(write_config, tmp_path: Path):
    from conftest import store_client

    made = tmp_path / "made" / "mlruns.db"
    made.parent.mkdir()
    store_client(f"sqlite:///{made}").search_experiments()  # MLflow makes the store at its schema
    root = write_config(root=tmp_path / "project")
    shutil.copy(made, root / "mlruns.db")  # a path MLflow has not opened (it keeps the stores it opened)
    with closing(sqlite3.connect(root / "mlruns.db")) as conn, conn:
        conn.execute("UPDATE alembic_version SET version_num = ?", ("75868b020152",))  # the revision before 3.17's
    result = CliRunner().invoke(main, ["runs", "--project", str(root)])
    assert result.exit_code != 0
    assert "75868b020152" in result.output and "mlflow db upgrade" in result.output
