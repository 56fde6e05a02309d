"""When the read-only commands read a SQLite store directly, and when they go through MLflow's client."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from mlops_template.config.load import Environment
from mlops_template.tracking import reader as store_reader


def environment(**values) -> Environment:
    return Environment(name="local", storage="data", **values)


def test_a_store_whose_tables_differ_from_mlflow_s_is_left_to_mlflow(tmp_path: Path):
    path = tmp_path / "mlruns.db"
    conn = sqlite3.connect(path)
    for table, columns in store_reader._SCHEMA.items():
        kept = [c for c in columns if (table, c) != ("latest_metrics", "is_nan")]  # as an older schema might lack
        conn.execute(f"CREATE TABLE {table} ({', '.join(kept)})")
    conn.commit()
    conn.close()
    assert store_reader._connect(path) is None

    complete = tmp_path / "complete.db"
    conn = sqlite3.connect(complete)
    for table, columns in store_reader._SCHEMA.items():
        conn.execute(f"CREATE TABLE {table} ({', '.join(columns)})")
    conn.commit()
    conn.close()
    assert isinstance(store_reader._connect(complete), sqlite3.Connection)


def test_only_an_existing_sqlite_file_holding_runs_and_registry_is_read_directly(tmp_path: Path):
    db = tmp_path / "mlruns.db"
    uri = f"sqlite:///{db}"
    assert store_reader._direct_path(environment(tracking_uri=uri)) is None  # not made yet: MLflow creates it
    db.touch()
    assert store_reader._direct_path(environment(tracking_uri=uri)) == db.resolve()
    assert store_reader._direct_path(environment(tracking_uri=uri, registry_uri="http://127.0.0.1:1")) is None
    assert store_reader._direct_path(environment(tracking_uri="http://127.0.0.1:5000")) is None
