"""The rendered project's make_data and feat_data on pandas and on Dask: the same code, the same tables.

One rendered project gets four small CSV files of a synthetic table under
`data/raw/` (numeric columns with gaps, a text column, a label column, rows
duplicated within and across files, some unlabelled). Two copies of it run
`mlops run --step make_data --step feat_data`, one with `MLOPS_ENGINE=pandas`
and one with `MLOPS_ENGINE=dask` (a LocalCluster started in this process);
the Dask copy then runs again on the same data.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from conftest import copy_project

from mlops_template.cli.main import main
from mlops_template.data import engines
from mlops_template.data.layout import Snapshot
from mlops_template.data.snapshots import SnapshotStore
from mlops_template.scaffold.new import new_project
from mlops_template.storage import LocalStorage

pytestmark = pytest.mark.xdist_group("dask")  # a LocalCluster per test process is plenty

TARGET = "outcome"
FILES = 4
ROWS_PER_FILE = 60
STATS = ("nulls", "min", "max", "mean", "std", "distinct")
_VARIABLES = ("MLOPS_ENGINE", "MLOPS_DASK_SCHEDULER", "MLOPS_ENVIRONMENT", "MLOPS_STORAGE", "MLFLOW_TRACKING_URI")
_VARIABLES += ("MLFLOW_REGISTRY_URI", "MLFLOW_RUN_ID")


def synthetic_files(seed: int = 7) -> list[pd.DataFrame]:
    """Four parts of one table: gaps in every feature, duplicates within and across parts, unlabelled rows."""
    rng = np.random.default_rng(seed)
    parts = []
    for i in range(FILES):
        n = ROWS_PER_FILE
        df = pd.DataFrame(
            {
                "size": rng.normal(10.0, 3.0, n).round(2),
                "weight": rng.uniform(0.5, 4.0, n).round(3),
                "colour": rng.choice(["red", "green", "blue", "amber"], n),
                TARGET: rng.choice(["yes", "no", "maybe"], n),
            }
        )
        df.loc[rng.choice(n, 6, replace=False), "size"] = np.nan
        df.loc[rng.choice(n, 4, replace=False), "weight"] = np.nan
        df.loc[rng.choice(n, 3, replace=False), "colour"] = np.nan
        df.loc[rng.choice(n, 5, replace=False), TARGET] = np.nan
        df = pd.concat([df, df.iloc[[1, 2, 3]]], ignore_index=True)  # duplicates within the file
        if i:
            df = pd.concat([df, parts[0].iloc[[10 + i]]], ignore_index=True)  # and of a row of the first file
        parts.append(df)
    return parts


def expected_counts(parts: list[pd.DataFrame]) -> tuple[int, int]:
    """Rows kept and dropped by the template's cleaning, counted here with plain pandas."""
    whole = pd.concat(parts, ignore_index=True)
    kept = len(whole.drop_duplicates().dropna(subset=[TARGET]))
    return kept, len(whole) - kept


@dataclass
class Runs:
    pandas: Path
    dask: Path
    outputs: dict[str, str]
    first_dask_processed: str
    expected: tuple[int, int]


def run_steps(project: Path, engine: str) -> str:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLOPS_ENGINE", engine)
        args = ["run", "--project", str(project), "-s", "make_data", "-s", "feat_data", "-P", f"target={TARGET}"]
        args.append("--no-cache")  # the Dask copy's second run computes again: the same snapshots, not reused ones
        result = CliRunner().invoke(main, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def store(project: Path) -> SnapshotStore:
    return SnapshotStore(LocalStorage(project / "data"))


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Runs]:
    """Both engines' runs of the two steps; the Dask copy twice. The local cluster is closed at the end."""
    base = tmp_path_factory.mktemp("engines")
    parts = synthetic_files()
    with pytest.MonkeyPatch.context() as mp:
        for var in _VARIABLES:
            mp.delenv(var, raising=False)
        rendered = new_project("engines-demo", directory=base / "rendered", lock=False)
        raw = rendered / "data" / "raw"
        raw.mkdir(parents=True, exist_ok=True)
        for i, part in enumerate(parts):
            part.to_csv(raw / f"part-{i}.csv", index=False)
        pandas_copy = copy_project(rendered, base / "pandas")
        dask_copy = copy_project(rendered, base / "dask")
        try:
            outputs = {"pandas": run_steps(pandas_copy, "pandas"), "dask": run_steps(dask_copy, "dask")}
            first = store(dask_copy).current("processed").id
            outputs["dask again"] = run_steps(dask_copy, "dask")
            yield Runs(pandas_copy, dask_copy, outputs, first, expected_counts(parts))
        finally:
            engines.close_clients()


def table(project: Path, name: str) -> tuple[Snapshot, pd.DataFrame]:
    snapshots = store(project)
    return snapshots.read(snapshots.current(name))


def normalised(df: pd.DataFrame) -> pd.DataFrame:
    """Rows sorted by every column, text columns as one string dtype, a fresh index."""
    out = df.copy()
    for column in out.columns:
        if not pd.api.types.is_numeric_dtype(out[column]):
            out[column] = out[column].astype("string")
    return out.sort_values(list(out.columns), na_position="last").reset_index(drop=True)


@pytest.mark.parametrize("name", ["raw", "processed", "featurized"])
def test_dask_snapshots_are_partitioned_and_pandas_ones_are_not(runs: Runs, name: str):
    if name == "raw":
        dask_snapshot, pandas_snapshot = store(runs.dask).list("raw")[0], store(runs.pandas).list("raw")[0]
    else:
        dask_snapshot, pandas_snapshot = store(runs.dask).current(name), store(runs.pandas).current(name)
    assert dask_snapshot.partitioned
    assert len(dask_snapshot.partitions) >= FILES
    assert sum(part["rows"] for part in dask_snapshot.partitions) == dask_snapshot.rows
    assert not pandas_snapshot.partitioned  # MLOPS_ENGINE=pandas really ran pandas


@pytest.mark.parametrize("name", ["processed", "featurized"])
def test_both_engines_write_the_same_rows(runs: Runs, name: str):
    pandas_snapshot, pandas_df = table(runs.pandas, name)
    dask_snapshot, dask_df = table(runs.dask, name)
    assert list(dask_df.columns) == list(pandas_df.columns)
    assert dask_snapshot.rows == pandas_snapshot.rows == runs.expected[0]
    pd.testing.assert_frame_equal(normalised(dask_df), normalised(pandas_df), check_dtype=False)
    assert dask_df.duplicated().sum() == 0
    assert dask_df[TARGET].notna().all()


@pytest.mark.parametrize("name", ["processed", "featurized"])
def test_both_engines_record_the_same_column_statistics(runs: Runs, name: str):
    pandas_snapshot, dask_snapshot = store(runs.pandas).current(name), store(runs.dask).current(name)
    assert [c["name"] for c in dask_snapshot.columns] == [c["name"] for c in pandas_snapshot.columns]
    compared = 0
    for pandas_column in pandas_snapshot.columns:
        dask_column = dask_snapshot.column(pandas_column["name"])
        for stat in STATS:
            assert (stat in dask_column) == (stat in pandas_column), (pandas_column["name"], stat)
            if stat not in pandas_column:
                continue
            expected, got = pandas_column[stat], dask_column[stat]
            if isinstance(expected, float):
                assert got == pytest.approx(expected, rel=1e-9, abs=1e-12), (pandas_column["name"], stat)
            else:
                assert got == expected, (pandas_column["name"], stat)
            compared += 1
    assert compared == 2 * 5 + 2 * 2  # nulls, min, max, mean, std of each number column; nulls, distinct of each text


def test_the_log_line_counts_the_same_rows_on_both_engines(runs: Runs):
    kept, dropped = runs.expected
    line = f"make_data: {kept} rows kept, {dropped} duplicate or unlabelled dropped"
    for engine, output in runs.outputs.items():
        assert line in output, (engine, re.findall(r"make_data: .*dropped", output))


def test_a_second_dask_run_on_the_same_data_writes_the_same_snapshot(runs: Runs):
    again = store(runs.dask).current("processed").id
    assert again == runs.first_dask_processed
    assert len(store(runs.dask).list("processed")) == 1


def test_add_features_gives_the_same_columns_on_a_dask_frame(runs: Runs):
    """Iris shape features and dates as numbers (naive and tz-aware), on pandas and on Dask, computed here."""
    import importlib.util

    import dask.dataframe as dd

    path = runs.pandas / "src" / "engines_demo" / "features" / "build_features.py"
    spec = importlib.util.spec_from_file_location("engines_demo_build_features", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    df = pd.DataFrame(
        {
            "sepal_length": [5.1, 4.9, 6.3, 5.8],
            "sepal_width": [3.5, 3.0, 3.3, 2.7],
            "petal_length": [1.4, 1.4, 6.0, 5.1],
            "petal_width": [0.2, 0.2, 2.5, 1.9],
            "seen": pd.to_datetime(["2024-01-01", "2024-01-02", "2024-03-01", "1970-01-02"]),
            "seen_utc": pd.to_datetime(
                ["2024-01-01T12:00", "2024-01-02T00:00", "2024-03-01T00:00", "1970-01-01T00:00"], utc=True
            ),
        }
    )
    expected = module.add_features(df)
    got = module.add_features(dd.from_pandas(df, npartitions=2)).compute(scheduler="sync")
    assert {"petal_area", "sepal_area", "petal_ratio"} <= set(expected.columns)
    assert expected["seen"].tolist() == [19723.0, 19724.0, 19783.0, 1.0]
    assert expected["seen_utc"].tolist() == [19723.5, 19724.0, 19783.0, 0.0]
    pd.testing.assert_frame_equal(got.reset_index(drop=True), expected)
