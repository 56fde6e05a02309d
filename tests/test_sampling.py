"""The rows a model trains on: all of them up to `limit`, else a seeded sample, stratified by class, on either engine."""

from __future__ import annotations

import dask.dataframe as dd
import numpy as np
import pandas as pd
import pytest

from mlops_template import training_rows


@pytest.fixture
def table() -> pd.DataFrame:
    rng = np.random.default_rng(7)
    label = np.repeat(["a", "b", "c"], [700, 290, 10])
    return pd.DataFrame({"x": rng.normal(size=1000), "label": rng.permutation(label)})


def test_under_the_limit_every_row_is_kept(table):
    rows = training_rows(table, "label", "classification", limit=1000, seed=1)
    assert not rows.sampled and len(rows.rows) == 1000
    assert rows.describe() == "training on all 1000 rows (max_train_rows = 1000)"


@pytest.mark.parametrize("partitions", [None, 4])
def test_a_classification_sample_keeps_every_class_in_proportion(table, partitions):
    df = table if partitions is None else dd.from_pandas(table, npartitions=partitions)
    rows = training_rows(df, "label", "classification", limit=101, seed=1)
    assert isinstance(rows.rows, pd.DataFrame) and len(rows.rows) == 101
    assert rows.rows["label"].value_counts().to_dict() == {"a": 71, "b": 29, "c": 1}
    assert set(rows.rows["x"]) <= set(table["x"])  # rows of the table, not made up
    assert rows.describe() == "training on a stratified sample of 101 of 1000 rows (max_train_rows = 101)"
    assert rows.metrics() == {"rows_available": 1000, "rows_sampled": 101}
    again = training_rows(df, "label", "classification", limit=101, seed=1).rows
    pd.testing.assert_frame_equal(again, rows.rows)  # seeded: the same rows every time
    other = training_rows(df, "label", "classification", limit=101, seed=2).rows
    assert not other["x"].equals(rows.rows["x"])


def test_a_regression_sample_is_a_plain_one(table):
    df = dd.from_pandas(table.assign(label=np.arange(1000.0)), npartitions=3)
    rows = training_rows(df, "label", "regression", limit=250, seed=3)
    assert len(rows.rows) == 250 and rows.rows["label"].is_unique
    assert rows.describe().startswith("training on a random sample of 250 of 1000 rows")
