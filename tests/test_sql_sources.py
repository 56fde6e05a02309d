"""SQL sources: a query file on a connection an environment names, its result a snapshot pinned to the run.

DuckDB and PostgreSQL (the suite's server) for real: a DuckDB file in the project, a PostgreSQL database
whose URL takes its password from a variable.
"""

from __future__ import annotations

import hashlib
import json
from contextlib import contextmanager
from pathlib import Path

import duckdb
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from conftest import store_client

from mlops_template import Pipeline, StepContext, load_config
from mlops_template.cli.main import main
from mlops_template.data import sql
from mlops_template.errors import ConfigError, StepError
from mlops_template.pipeline.runner import run_pipeline

QUERY = "SELECT id, age, plan FROM customers WHERE age >= :min_age ORDER BY id\n"


def write_config(root: Path, connections: str = "", extra: str = "") -> None:
    (root / "mlops.toml").write_text(
        '[project]\nname = "sqlsrc"\npackage = "sqlsrc"\n\n[model]\ngate = { min = false }\n\n'
        f'[environments.local]\nstorage = "{root / "storage"}"\ntracking_uri = "sqlite:///{root / "mlruns.db"}"\n\n'
        f'[environments.local.connections]\nwarehouse = "duckdb:///warehouse.duckdb"\n{connections}\n'
        '[environments.dev]\nstorage = "s3://acme/sqlsrc"\ntracking_uri = "http://mlflow.dev.internal:5000"\n\n'
        '[environments.dev.connections]\nlake = "duckdb:///lake.duckdb"\n' + extra,
        encoding="utf-8",
    )


@pytest.fixture
def root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for var in ("MLOPS_ENVIRONMENT", "MLOPS_STORAGE", "MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "MLFLOW_RUN_ID"):
        monkeypatch.delenv(var, raising=False)
    write_config(tmp_path)
    (tmp_path / "queries").mkdir()
    (tmp_path / "queries" / "customers.sql").write_text(QUERY)
    with duckdb.connect(str(tmp_path / "warehouse.duckdb")) as db:
        db.execute("CREATE TABLE customers (id INTEGER, age INTEGER, plan VARCHAR)")
        db.execute("INSERT INTO customers VALUES (1, 25, 'basic'), (2, 31, 'pro'), (3, 47, NULL), (4, 52, 'basic')")
    return tmp_path


def reading(results: list, **kwargs):
    """A step that reads the customers query (with `kwargs` for read_sql) and keeps what it got."""
    options = {"connection": "warehouse", "params": {"min_age": 30}, **kwargs}

    def read_customers(ctx: StepContext) -> None:
        results.append(ctx.read_sql("queries/customers.sql", **options))

    return read_customers


def step_runs(root: Path) -> list:
    client = store_client(f"sqlite:///{root / 'mlruns.db'}")
    experiment = client.get_experiment_by_name("sqlsrc")
    runs = client.search_runs([experiment.experiment_id], order_by=["attributes.start_time ASC"])
    return [r for r in runs if "mlops.step" in r.data.tags]


def test_a_duckdb_query_with_params_becomes_a_snapshot_and_its_run_records_the_query(root):
    results: list = []
    done = run_pipeline(Pipeline([reading(results)]), load_config(root))
    [df] = results
    missing_as_none = df.astype(object).where(df.notna(), None)  # text gaps read back as NaN, as in any table
    assert missing_as_none.to_dict("list") == {"id": [2, 3, 4], "age": [31, 47, 52], "plan": ["pro", None, "basic"]}
    [step] = step_runs(root)
    recorded = json.loads(step.data.tags["mlops.sql.customers"])
    assert recorded == {
        "file": "queries/customers.sql",
        "sha256": hashlib.sha256(QUERY.encode()).hexdigest(),
        "connection": "warehouse",  # its name: never its URL
        "params": {"min_age": "30"},
    }
    assert step.data.tags["mlops.data.customers"]  # the result is a snapshot, read like any dataset

    shown = CliRunner().invoke(main, ["show", done.run_id, "--json", "--project", str(root)])
    [report] = json.loads(shown.output)["steps"]
    assert report["queries"] == {"customers": recorded}
    text = CliRunner().invoke(main, ["show", done.run_id, "--project", str(root)]).output
    assert "query    customers ← queries/customers.sql (sha256 " in text and "on 'warehouse', min_age=30" in text


def test_a_retry_under_the_same_key_reads_the_pinned_result_not_the_changed_table(root):
    results: list = []
    read = reading(results)
    attempts: list[int] = []

    def read_then_fail_once(ctx: StepContext) -> None:
        read(ctx)
        attempts.append(1)
        if len(attempts) == 1:
            raise RuntimeError("the first attempt fails after reading")

    with pytest.raises(StepError):
        run_pipeline(Pipeline([read_then_fail_once]), load_config(root), pipeline_run="nightly-1")
    with duckdb.connect(str(root / "warehouse.duckdb")) as db:
        db.execute("INSERT INTO customers VALUES (5, 60, 'pro')")
    run_pipeline(Pipeline([read_then_fail_once]), load_config(root), pipeline_run="nightly-1")
    assert results[0].equals(results[1]) and len(results[1]) == 3
    run_pipeline(Pipeline([read]), load_config(root))  # a new pipeline run reads the table as it is now
    assert len(results[2]) == 4


def row_groups_of_results(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The row groups of each result file `read_sql` stores, as it stores them."""
    groups: list[int] = []
    real = sql.result_file

    @contextmanager
    def spy(*args, **kwargs):
        with real(*args, **kwargs) as (path, rows):
            groups.append(pq.ParquetFile(path).metadata.num_row_groups)
            yield path, rows

    monkeypatch.setattr(sql, "result_file", spy)
    return groups


def test_a_duckdb_result_larger_than_a_chunk_is_written_a_chunk_at_a_time(root, monkeypatch):
    monkeypatch.setattr(sql, "CHUNK_ROWS", 10)
    groups = row_groups_of_results(monkeypatch)
    with duckdb.connect(str(root / "warehouse.duckdb")) as db:
        db.execute("CREATE TABLE scores (id INTEGER, score DOUBLE, grade VARCHAR)")
        db.execute(  # score and grade are empty in the whole first chunk
            "INSERT INTO scores SELECT i, CASE WHEN i > 10 THEN i / 2 END, CASE WHEN i > 10 THEN 'g' || i END "
            "FROM range(1, 36) t(i)"
        )
    (root / "queries" / "scores.sql").write_text("SELECT * FROM scores ORDER BY id")
    results: list = []

    def read_scores(ctx: StepContext) -> None:
        results.append(ctx.read_sql("queries/scores.sql", connection="warehouse"))

    run_pipeline(Pipeline([read_scores]), load_config(root))
    [df] = results
    assert groups == [4] and len(df) == 35  # 10, 10, 10 and 5 rows: no chunk held more
    assert df["score"].dtype == "float64" and df["score"].isna().sum() == 10 and df["score"].iloc[-1] == 17.5
    assert df["grade"].iloc[:10].isna().all() and df["grade"].iloc[-1] == "g35"


def test_a_server_result_in_chunks_takes_the_types_of_later_chunks_where_the_first_is_empty(
    root, postgres, monkeypatch
):
    url = postgres.create_database()
    monkeypatch.setattr(sql, "CHUNK_ROWS", 10)
    parts: list[int] = []
    real_join = sql._join
    monkeypatch.setattr(sql, "_join", lambda found, target: parts.append(len(found)) or real_join(found, target))
    import psycopg2

    dsn = url.removeprefix("postgresql+psycopg2://").split("@")[1]
    host_port, database = dsn.split("/")
    host, port = host_port.split(":")
    with psycopg2.connect(host=host, port=port, user="postgres", dbname=database) as connection:
        with connection.cursor() as cursor:
            cursor.execute("CREATE TABLE scores (id integer, score double precision, grade text)")
            cursor.execute(  # score and grade are empty in the whole first chunk
                "INSERT INTO scores SELECT i, CASE WHEN i > 10 THEN i / 2.0 END, CASE WHEN i > 10 THEN 'g' || i END "
                "FROM generate_series(1, 35) i"
            )
    write_config(root, connections=f'pg = "postgresql+psycopg2://postgres@{host}:{port}/{database}"\n')
    (root / "queries" / "scores.sql").write_text("SELECT * FROM scores ORDER BY id")
    results: list = []

    def read_scores(ctx: StepContext) -> None:
        results.append(ctx.read_sql("queries/scores.sql", connection="pg"))

    run_pipeline(Pipeline([read_scores]), load_config(root))
    [df] = results
    assert parts == [4] and len(df) == 35
    assert df["score"].dtype == "float64" and df["score"].isna().sum() == 10 and df["score"].iloc[-1] == 17.5
    assert df["grade"].iloc[:10].isna().all() and df["grade"].iloc[-1] == "g35"


def test_postgresql_reads_its_password_from_a_variable_and_never_records_it(root, postgres, monkeypatch):
    url = postgres.create_database()  # trust authentication on loopback: the password is carried, not needed
    import psycopg2

    dsn = url.removeprefix("postgresql+psycopg2://").split("@")[1]
    host_port, database = dsn.split("/")
    host, port = host_port.split(":")
    with psycopg2.connect(host=host, port=port, user="postgres", dbname=database) as connection:
        with connection.cursor() as cursor:
            cursor.execute("CREATE TABLE customers (id integer, age integer, plan text)")
            cursor.execute("INSERT INTO customers VALUES (1, 25, 'basic'), (2, 31, 'pro'), (3, 47, 'pro')")
    pg = f'pg = "postgresql+psycopg2://postgres:${{WAREHOUSE_PASSWORD}}@{host}:{port}/{database}"\n'
    write_config(root, connections=pg)
    monkeypatch.setenv("WAREHOUSE_PASSWORD", "pg-secret-7f3a9c")
    results: list = []
    done = run_pipeline(Pipeline([reading(results, connection="pg")]), load_config(root))
    assert results[0].to_dict("list") == {"id": [2, 3], "age": [31, 47], "plan": ["pro", "pro"]}
    shown = CliRunner().invoke(main, ["show", done.run_id, "--json", "--project", str(root)]).output
    assert '"connection": "pg"' in shown and "pg-secret-7f3a9c" not in shown
    assert "pg-secret-7f3a9c" not in (root / "mlops.toml").read_text()


@pytest.mark.parametrize(
    ("kwargs", "setup", "message"),
    [
        (
            {"connection": "lake"},
            None,
            "environment 'local' has no connection 'lake'; it is defined for dev only: add it under "
            "[environments.local.connections]",
        ),
        ({"connection": "wharehouse"}, None, "has no connection 'wharehouse'; did you mean 'warehouse'?"),
        ({"params": {}}, None, "query queries/customers.sql: it names :min_age, not given"),
        ({"params": {"min_age": 1, "plan": "pro"}}, None, "plan given but not named in it (as :name)"),
        ({}, "syntax", "query queries/customers.sql failed on environment 'local': connection 'warehouse'"),
        ({}, "no-file", "names the database file"),
        ({}, "no-query", "query file"),
        ({"params": {"min_age": 99}}, None, "returned no rows (params {'min_age': '99'}); check the parameters"),
    ],
    ids=["other-environment", "typo", "missing-param", "extra-param", "syntax", "no-database", "no-query", "empty"],
)
def test_bad_sources_stop_the_step_in_one_line_and_store_nothing(root, kwargs, setup, message):
    if setup == "syntax":
        (root / "queries" / "customers.sql").write_text("SELEC id FROM customers WHERE age >= :min_age")
    elif setup == "no-file":
        (root / "warehouse.duckdb").unlink()
    elif setup == "no-query":
        (root / "queries" / "customers.sql").unlink()
    with pytest.raises(StepError) as raised:
        run_pipeline(Pipeline([reading([], **kwargs)]), load_config(root))
    text = str(raised.value)
    assert message in text and "\n" not in text and "Traceback" not in text
    assert not (root / "storage" / "snapshots" / "customers").exists()
    if setup == "no-file":
        assert not (root / "warehouse.duckdb").exists()  # not made as a new, empty database


def test_an_empty_result_is_stored_when_the_step_allows_it(root):
    results: list = []
    run_pipeline(Pipeline([reading(results, params={"min_age": 99}, allow_empty=True)]), load_config(root))
    assert list(results[0].columns) == ["id", "age", "plan"] and results[0].empty


def test_a_variable_the_url_reads_must_be_set_and_a_literal_password_is_refused(root, monkeypatch):
    monkeypatch.delenv("WAREHOUSE_PASSWORD", raising=False)
    write_config(root, connections='pg = "postgresql+psycopg2://ml:${WAREHOUSE_PASSWORD}@127.0.0.1:1/x"\n')
    with pytest.raises(StepError, match=r"connection 'pg' reads \$\{WAREHOUSE_PASSWORD\}, which is not set"):
        run_pipeline(Pipeline([reading([], connection="pg")]), load_config(root))
    write_config(root, connections='pg = "postgresql+psycopg2://ml:hunter2@127.0.0.1:1/x"\n')
    with pytest.raises(ConfigError, match=r"pg holds a password; passwords stay out of mlops.toml: write \$\{PG_"):
        load_config(root)


def test_an_athena_url_is_accepted_and_its_dialect_loads_without_calling_aws(root, monkeypatch):
    from sqlalchemy import create_engine

    athena = "awsathena+rest://@athena.${AWS_REGION}.amazonaws.com:443/sales?s3_staging_dir=s3://acme-athena/results/"
    write_config(root, connections=f'athena = "{athena}"\n')
    monkeypatch.setenv("AWS_REGION", "eu-west-1")
    config = load_config(root)
    url = sql.connection_url(config, config.environment("local"), "athena")
    assert url == athena.replace("${AWS_REGION}", "eu-west-1")
    engine = create_engine(url)  # PyAthena's dialect (the `athena` extra); nothing is connected yet
    assert engine.dialect.name == "awsathena"


def test_a_dask_read_has_the_workers_read_the_result_from_storage(root, monkeypatch):
    from mlops_template.data import engines

    monkeypatch.setattr(sql, "CHUNK_ROWS", 2)
    results: list = []
    try:
        run_pipeline(Pipeline([reading(results, engine="dask")]), load_config(root))
        [ddf] = results
        assert engines.is_dask(ddf)
        df = ddf.compute().reset_index(drop=True)
    finally:
        engines.close_clients()
    assert df["id"].tolist() == [2, 3, 4] and df["age"].tolist() == [31, 47, 52]
    staged = [p for p in (root / "storage" / "snapshots" / "customers").glob(".parts-*")]
    assert staged == []  # the result's staging copy is gone
