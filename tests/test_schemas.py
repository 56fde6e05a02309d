"""pandera schemas at the step boundaries: what a step writes, reads raw or gets from SQL is checked against its
dataset's schema in `src/<package>/schemas.py`; a failure stops the step in one line and stores nothing.
"""

from __future__ import annotations

import sys
import textwrap
import uuid
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner
from conftest import store_client

from mlops_template import Pipeline, StepContext, load_config
from mlops_template.cli.main import main
from mlops_template.errors import ConfigError, StepError
from mlops_template.pipeline.runner import run_pipeline

SCHEMAS = """
import pandera.pandas as pa

customers = pa.DataFrameSchema(
    {
        "id": pa.Column(int, unique=True),
        "age": pa.Column(int, pa.Check.in_range(0, 120)),
        "plan": pa.Column(str, pa.Check.isin(["basic", "pro"]), nullable=True),
    },
    strict=True,
)
"""
GOOD = pd.DataFrame({"id": [1, 2, 3], "age": [25, 31, 47], "plan": ["basic", "pro", None]})


@pytest.fixture
def root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for var in ("MLOPS_ENVIRONMENT", "MLOPS_STORAGE", "MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "MLFLOW_RUN_ID"):
        monkeypatch.delenv(var, raising=False)
    package = f"checked_{uuid.uuid4().hex[:8]}"  # its own name: this process imports its schemas module
    (tmp_path / "src" / package).mkdir(parents=True)
    (tmp_path / "src" / package / "__init__.py").write_text("")
    (tmp_path / "src" / package / "schemas.py").write_text(SCHEMAS)
    monkeypatch.syspath_prepend(str(tmp_path / "src"))
    write_config(tmp_path, package)
    return tmp_path


def write_config(root: Path, package: str, data: str = "") -> None:
    (root / "mlops.toml").write_text(
        f'[project]\nname = "{package}"\npackage = "{package}"\n\n[model]\ngate = {{ min = false }}\n\n{data}\n'
        f'[environments.local]\nstorage = "{root / "storage"}"\ntracking_uri = "sqlite:///{root / "mlruns.db"}"\n',
        encoding="utf-8",
    )


def writing(df: pd.DataFrame):
    def write_customers(ctx: StepContext) -> None:
        ctx.write("customers", df)

    return write_customers


def stored(root: Path) -> list[Path]:
    return sorted((root / "storage").rglob("customers*"))


def failures_artifact(root: Path, name: str = "customers") -> str:
    client = store_client(f"sqlite:///{root / 'mlruns.db'}")
    [experiment] = [e for e in client.search_experiments() if e.name != "Default"]
    [run] = [r for r in client.search_runs([experiment.experiment_id]) if "mlops.step" in r.data.tags]
    return Path(client.download_artifacts(run.info.run_id, f"schema/{name}.failures.csv", str(root))).read_text()


def test_a_table_that_fits_its_schema_is_stored(root):
    run_pipeline(Pipeline([writing(GOOD)]), load_config(root))
    assert stored(root)


@pytest.mark.parametrize(
    ("bad", "expected"),
    [
        (GOOD.rename(columns={"plan": "tier"}), "column_in_schema (tier); column_in_dataframe (plan)"),
        (GOOD.assign(age=["25", "31", "47"]), "column 'age' fails dtype('int64')"),
        (GOOD.assign(age=[25, 131, -1]), "column 'age' fails in_range(0, 120) on 2 rows"),
        (GOOD.assign(plan=["basic", "gold", None]), "column 'plan' fails isin(['basic', 'pro']) on 1 row"),
    ],
    ids=["renamed-column", "wrong-dtype", "out-of-range", "new-category"],
)
def test_a_table_that_fails_its_schema_stops_the_step_in_one_line_and_stores_nothing(root, bad, expected):
    with pytest.raises(StepError) as raised:
        run_pipeline(Pipeline([writing(bad)]), load_config(root))
    message = str(raised.value)
    assert "dataset 'customers' fails its schema" in message and expected in message, message
    assert "\n" not in message and "nothing was stored under 'customers'" in message
    assert "artifact schema/customers.failures.csv" in message
    assert stored(root) == []
    report = failures_artifact(root)
    assert report.startswith("schema_context,column,check,check_number,failure_case,index")


def test_the_cli_prints_the_failure_in_one_line_and_exits_non_zero(root):
    package = load_config(root).package
    (root / "src" / package / "main.py").write_text(
        "import pandas as pd\nfrom mlops_template import Pipeline\n\n\n"
        "def make(ctx):\n    ctx.write('customers', pd.DataFrame({'id': [1], 'age': [200], 'plan': ['pro']}))\n\n\n"
        "pipeline = Pipeline([make])\n"
    )
    result = CliRunner().invoke(main, ["run", "--project", str(root)])
    assert result.exit_code == 1
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and "column 'age' fails in_range(0, 120) on 1 row" in errors[0]
    assert "Traceback" not in result.output


def test_warn_stores_the_table_and_says_so_and_off_does_not_check(root, caplog):
    package = load_config(root).package
    bad = GOOD.assign(age=[25, 131, 47])
    write_config(root, package, '[data]\nvalidation = "warn"\n')
    with caplog.at_level("WARNING"):
        done = run_pipeline(Pipeline([writing(bad)]), load_config(root))
    assert stored(root) and "column 'age' fails in_range(0, 120) on 1 row" in caplog.text
    assert any("stored anyway" in note for step in done.steps for note in step.notes)
    write_config(root, package, '[data]\nvalidation = "off"\n')
    run_pipeline(Pipeline([writing(GOOD.assign(age=[25, 31, 999]))]), load_config(root))
    write_config(root, package, '[data]\nvalidation = "strict"\n')
    with pytest.raises(ConfigError, match=r"\[data\] validation 'strict' is unknown; valid: error, off, warn"):
        load_config(root)


def test_raw_data_is_checked_against_the_raw_schema_before_it_is_kept(root):
    package = load_config(root).package
    schemas = root / "src" / package / "schemas.py"
    schemas.write_text(SCHEMAS + "\nraw = pa.DataFrameSchema({'x': pa.Column(int, pa.Check.ge(0))})\n")
    sys.modules.pop(f"{package}.schemas", None)
    (root / "storage" / "raw").mkdir(parents=True)
    (root / "storage" / "raw" / "a.csv").write_text("x\n1\n-2\n")

    def read(ctx: StepContext) -> None:
        ctx.read_raw()

    with pytest.raises(StepError, match=r"dataset 'raw' fails its schema \(1 rows\): column 'x' fails greater_than_or"):
        run_pipeline(Pipeline([read]), load_config(root))
    assert not (root / "storage" / "snapshots" / "raw").exists()


def test_a_syntax_error_in_the_schema_module_is_one_line_naming_the_file_and_line(root):
    package = load_config(root).package
    (root / "src" / package / "schemas.py").write_text(
        "import pandera.pandas as pa\n\ncustomers = pa.DataFrameSchema(\n"
    )
    sys.modules.pop(f"{package}.schemas", None)
    with pytest.raises(StepError, match=r"schemas.py, line \d+: .*; fix the schema module"):
        run_pipeline(Pipeline([writing(GOOD)]), load_config(root))


def test_an_inferred_schema_module_validates_the_snapshot_it_came_from(root):
    table = pd.DataFrame(
        {
            "id": range(200),
            "score": [i / 3 for i in range(200)],
            "plan": ["basic", "pro", None, "pro"] * 50,
            "active": [True, False] * 100,
        }
    )
    package = load_config(root).package
    (root / "src" / package / "schemas.py").unlink()
    sys.modules.pop(f"{package}.schemas", None)
    run_pipeline(Pipeline([writing(table)]), load_config(root))
    result = CliRunner().invoke(main, ["data", "schema", "customers", "--project", str(root)])
    assert result.exit_code == 0, result.output
    assert "customers = pa.DataFrameSchema(" in result.output and "strict=True" in result.output
    namespace: dict = {}
    exec(compile(result.output, "schemas.py", "exec"), namespace)
    (root / "src" / package / "schemas.py").write_text(result.output)  # as a team would save it
    sys.modules.pop(f"{package}.schemas", None)
    run_pipeline(Pipeline([writing(table)]), load_config(root))  # it validates the very table it came from
    with pytest.raises(StepError, match="dataset 'customers' fails its schema"):
        run_pipeline(Pipeline([writing(table.assign(score=table["score"] - 1000))]), load_config(root))
    assert textwrap.dedent(result.output).startswith('"""Schemas of the datasets')


def test_a_query_result_is_checked_against_the_schema_named_after_the_query(root):
    import duckdb

    with duckdb.connect(str(root / "warehouse.duckdb")) as db:
        db.execute(
            "CREATE TABLE customers AS SELECT * FROM (VALUES (1, 25, 'basic'), (2, 31, 'gold')) t(id, age, plan)"
        )
    (root / "customers.sql").write_text("SELECT id, age, plan FROM customers ORDER BY id")
    with open(root / "mlops.toml", "a") as toml:
        toml.write('\n[environments.local.connections]\nwarehouse = "duckdb:///warehouse.duckdb"\n')

    def query(ctx: StepContext) -> None:
        ctx.read_sql("customers.sql", connection="warehouse")

    with pytest.raises(StepError, match=r"column 'plan' fails isin\(\['basic', 'pro'\]\) on 1 row; nothing was stored"):
        run_pipeline(Pipeline([query]), load_config(root))
    assert stored(root) == []


def test_a_schema_named_after_no_dataset_is_named_with_the_nearest_after_the_run(root, caplog):
    package = load_config(root).package
    (root / "src" / package / "schemas.py").write_text(SCHEMAS.replace("customers = ", "custmers = "))
    sys.modules.pop(f"{package}.schemas", None)
    with caplog.at_level("WARNING", logger="mlops_template"):
        run_pipeline(Pipeline([writing(GOOD.assign(age=[25, 31, 999]))]), load_config(root))  # nothing checks it
    assert stored(root)
    assert f"{package}.schemas: schema 'custmers' is named after no dataset, so it checks nothing; did you mean" in (
        caplog.text
    )
    assert "'customers'" in caplog.text


def test_a_dask_table_is_checked_per_partition_by_the_workers(root):
    import dask.dataframe as dd

    from mlops_template.data import engines

    package = load_config(root).package
    bad = dd.from_pandas(GOOD.assign(age=[25, 131, 47]), npartitions=2)
    try:
        with pytest.raises(StepError) as raised:
            run_pipeline(Pipeline([writing(bad)]), load_config(root))
        message = str(raised.value)
        assert "column 'age' fails in_range(0, 120) on 1 row" in message and "\n" not in message
        assert [p for p in stored(root) if p.is_file() or any(p.rglob("*.*"))] == []  # no part, no manifest
        write_config(root, package, '[data]\nvalidation = "warn"\n')  # the workers log it, the table is stored
        run_pipeline(Pipeline([writing(bad)]), load_config(root))
        assert stored(root)
    finally:
        engines.close_clients()
