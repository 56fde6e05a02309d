"""Manifest profiles: the same statistics from a DataFrame, a parquet file and a CSV file, streamed or in parts."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from mlops_template.data import manifest
from mlops_template.data.manifest import profile_file, profile_table
from mlops_template.data.stats import MAX_CATEGORIES, TOP_VALUES, profile_batches


@pytest.fixture
def frame() -> pd.DataFrame:
    rng = np.random.default_rng(7)
    n = 3000
    return pd.DataFrame(
        {
            "id": np.arange(n),  # wide integer range: no top values
            "label": rng.integers(0, 3, n),  # narrow integer range: counted
            "amount": np.round(rng.normal(100, 15, n), 3),
            "maybe": np.where(rng.random(n) < 0.1, np.nan, rng.random(n)),
            "city": rng.choice(["oslo", "lima", "pune"], n),
            "name": [f"user-{i}" for i in range(n)],  # high cardinality: no top values
        }
    )


def by_name(profile: dict) -> dict[str, dict]:
    return {c["name"]: c for c in profile["columns"]}


def assert_matches_pandas(profile: dict, df: pd.DataFrame) -> None:
    columns = by_name(profile)
    assert profile["rows"] == len(df)
    assert list(columns) == list(df.columns)
    for name in ("id", "label", "amount", "maybe"):
        col = columns[name]
        assert col["nulls"] == int(df[name].isna().sum())
        assert col["min"] == pytest.approx(df[name].min())
        assert col["max"] == pytest.approx(df[name].max())
        assert col["mean"] == pytest.approx(df[name].mean(), rel=1e-12)
        assert col["std"] == pytest.approx(df[name].std(ddof=1), rel=1e-9)
    expected = df["city"].value_counts()
    assert dict(map(tuple, columns["city"]["top"])) == expected.to_dict()
    assert columns["city"]["distinct"] == 3
    assert dict(map(tuple, columns["label"]["top"])) == df["label"].value_counts().to_dict()
    assert "top" not in columns["id"]
    assert "top" not in columns["name"]
    assert "mean" not in columns["city"]


def test_table_profile_matches_pandas(frame):
    import pyarrow as pa

    profile = profile_table(pa.Table.from_pandas(frame, preserve_index=False))
    assert_matches_pandas(profile, frame)
    types = {c["name"]: c["dtype"] for c in profile["columns"]}
    assert types == {
        "id": "int64",
        "label": "int64",
        "amount": "double",
        "maybe": "double",
        "city": "string",
        "name": "string",
    }


def test_parquet_profile_streams_batches_and_matches_pandas(frame, tmp_path, monkeypatch):
    monkeypatch.setattr(manifest, "_PARQUET_BATCH", 700)  # several batches, merged by the running statistics
    path = tmp_path / "f.parquet"
    frame.to_parquet(path, index=False, row_group_size=1000)
    assert_matches_pandas(profile_file(str(path), "parquet"), frame)


@pytest.mark.parametrize("parallel", [False, True], ids=["one stream", "parts"])
def test_csv_profile_matches_pandas_streamed_or_in_parts(frame, tmp_path, monkeypatch, parallel):
    monkeypatch.setattr(manifest, "_CSV_BLOCK", 16 << 10)
    monkeypatch.setattr(manifest, "_CSV_PARALLEL_MIN", 0 if parallel else 1 << 40)
    monkeypatch.setattr("os.cpu_count", lambda: 3)
    path = tmp_path / "f.csv"
    frame.to_csv(path, index=False)
    parts = manifest._csv_parts(str(path), path.stat().st_size)
    assert len(parts) == (6 if parallel else 1)  # two per core
    assert parts[0][0] == 0 and parts[-1][1] == path.stat().st_size
    assert all(a[1] == b[0] for a, b in zip(parts, parts[1:], strict=False))
    assert_matches_pandas(profile_file(str(path), "csv"), frame)


def test_csv_column_that_stops_fitting_its_inferred_type_is_widened(tmp_path, monkeypatch):
    monkeypatch.setattr(manifest, "_CSV_BLOCK", 1 << 10)  # the odd values come long after the first block
    path = tmp_path / "f.csv"
    lines = ["a,b"] + [f"{i},{i}" for i in range(2000)] + ["2.5,x7"]
    path.write_text("\n".join(lines) + "\n")
    columns = by_name(profile_file(str(path), "csv"))
    assert columns["a"]["dtype"] == "double"
    assert columns["a"]["max"] == 1999 and columns["a"]["mean"] == pytest.approx((sum(range(2000)) + 2.5) / 2001)
    assert columns["b"]["dtype"] == "string"


def test_csv_with_a_line_break_inside_a_quoted_value_is_read_correctly(tmp_path, monkeypatch):
    monkeypatch.setattr(manifest, "_CSV_PARALLEL_MIN", 0)
    path = tmp_path / "f.csv"
    rows = [f'{i},"note {i}"' for i in range(500)] + ['500,"two\nlines"']
    path.write_text("n,note\n" + "\n".join(rows) + "\n")
    profile = profile_file(str(path), "csv")
    assert profile["rows"] == 501
    assert by_name(profile)["n"]["max"] == 500


def test_all_null_and_empty_columns_have_counts_but_no_statistics():
    import pyarrow as pa

    table = pa.table({"x": pa.array([None, None], pa.float64()), "s": pa.array([None, "a"], pa.string())})
    columns = by_name(profile_table(table))
    assert columns["x"] == {"name": "x", "dtype": "double", "nulls": 2}
    assert columns["s"]["nulls"] == 1 and columns["s"]["top"] == [["a", 1]]
    empty = profile_table(table.slice(0, 0))
    assert empty["rows"] == 0 and by_name(empty)["x"] == {"name": "x", "dtype": "double", "nulls": 0}


def test_a_column_with_more_categories_than_the_cap_has_no_top_values():
    import pyarrow as pa

    values = [f"v{i % (MAX_CATEGORIES + 1)}" for i in range(500)]
    few = [f"v{i % MAX_CATEGORIES}" for i in range(500)]
    columns = by_name(profile_table(pa.table({"many": values, "few": few})))
    assert "top" not in columns["many"]
    assert columns["few"]["distinct"] == MAX_CATEGORIES and len(columns["few"]["top"]) == TOP_VALUES


def test_merged_parts_equal_the_whole():
    import pyarrow as pa

    rng = np.random.default_rng(1)
    table = pa.table({"x": rng.normal(1e6, 3, 5000), "k": rng.integers(0, 5, 5000)})
    whole = profile_batches(table.schema, table.to_batches(), prefetch=False)
    first = profile_batches(table.schema, table.slice(0, 1234).to_batches(), prefetch=False)
    first.merge(profile_batches(table.schema, table.slice(1234).to_batches(), prefetch=False))
    a, b = by_name(whole.summary()), by_name(first.summary())
    assert a["k"] == b["k"]
    for stat in ("min", "max", "mean", "std"):
        assert math.isclose(a["x"][stat], b["x"][stat], rel_tol=1e-12)
