"""`diff_frames` and `diff_snapshots`: schema changes, rows by whole-row hash (as multisets), per-column drift."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from mlops_template.data.diff import ColumnDrift, DataDiff, diff_frames, diff_snapshots
from mlops_template.data.snapshots import SnapshotStore
from mlops_template.errors import IntegrityError
from mlops_template.storage import LocalStorage


def constructed() -> tuple[pd.DataFrame, pd.DataFrame]:
    """B keeps rows 1, 2, 4 and 5 (once), drops 3 and a copy of 5, adds 6; gains `new`, loses `gone`;
    `score` goes int → float with equal values, `code` int → string."""
    a = pd.DataFrame(
        {
            "id": [1, 2, 3, 4, 5, 5],
            "name": ["a", "b", "c", "d", "e", "e"],
            "score": [10, 20, 30, 40, 50, 50],
            "code": [7, 8, 9, 10, 11, 11],
            "gone": ["x", "y", "z", "w", "v", "v"],
        }
    )
    b = pd.DataFrame(
        {
            "id": [1, 2, 4, 5, 6],
            "name": ["a", "b", "d", "e", "f"],
            "score": [10.0, 20.0, 40.0, 50.0, 60.5],
            "code": ["7", "8", "10", "11", "12"],
            "new": [0.1, 0.2, 0.3, 0.4, 0.5],
        }
    )
    return a, b


def test_constructed_example_reports_exact_schema_changes_and_rows():
    a, b = constructed()
    d = diff_frames(a, b, a="v1", b="v2")

    assert (d.a, d.b, d.rows_a, d.rows_b) == ("v1", "v2", 6, 5)
    assert d.added == [("new", "double")]
    assert d.removed == [("gone", "string")]
    assert d.retyped == [("score", "int64", "double"), ("code", "int64", "string")]
    assert d.compared_on == ["id", "name", "score", "code"]
    # A retyped column compares by value: 10 and 10.0, 7 and "7" are the same row.
    assert (d.only_in_a, d.only_in_b) == (2, 1)
    assert d.rows_only_in_a == [
        {"id": 3, "name": "c", "score": 30, "code": 9, "gone": "z"},
        {"id": 5, "name": "e", "score": 50, "code": 11, "gone": "v"},  # the second copy: B has it once
    ]
    assert d.rows_only_in_b == [{"id": 6, "name": "f", "score": 60.5, "code": "12", "new": 0.5}]
    assert not d.identical
    assert [c.name for c in d.columns] == ["id", "name", "score", "code"]
    assert [c.kind for c in d.columns] == ["numeric", "categorical", "numeric", "categorical"]


@pytest.mark.parametrize(
    ("a", "b", "only_in_a", "only_in_b"),
    [
        ([1, 1, 2], [1, 2], [1], []),
        ([1, 2], [1, 1, 2], [], [1]),
        ([1, 1, 1, 2], [1, 2, 2], [1, 1], [2]),
        ([3, 1, 2], [2, 3, 1], [], []),  # order does not matter
    ],
)
def test_duplicate_rows_count_as_a_multiset(a, b, only_in_a, only_in_b):
    d = diff_frames(pd.DataFrame({"x": a, "s": ["k"] * len(a)}), pd.DataFrame({"x": b, "s": ["k"] * len(b)}))
    assert [r["x"] for r in d.rows_only_in_a] == only_in_a
    assert [r["x"] for r in d.rows_only_in_b] == only_in_b
    assert (d.only_in_a, d.only_in_b) == (len(only_in_a), len(only_in_b))
    assert d.identical == (not only_in_a and not only_in_b)


def test_identical_frames_have_no_changes_and_zero_statistics():
    rng = np.random.default_rng(0)
    df = pd.DataFrame({"x": rng.normal(size=500), "k": rng.choice(["a", "b", "c"], 500), "n": np.arange(500)})
    d = diff_frames(df, df.copy())
    assert d.identical
    assert d.drifted == []
    assert (d.added, d.removed, d.retyped, d.rows_only_in_a, d.rows_only_in_b) == ([], [], [], [], [])
    x, k, n = d.columns
    for numeric in (x, n):
        assert (numeric.ks, numeric.psi, numeric.mean_shift) == (0.0, 0.0, 0.0)
    assert (k.share_shift, k.psi, k.top_changes) == (0.0, 0.0, [])


def test_a_column_shifted_by_three_standard_deviations_is_drifted():
    rng = np.random.default_rng(42)
    a = pd.DataFrame({"x": rng.normal(10, 2, 3000), "same": rng.normal(size=3000)})
    b = pd.DataFrame({"x": rng.normal(16, 2, 3000), "same": rng.normal(size=3000)})
    d = diff_frames(a, b)
    x = d.columns[0]
    assert d.drifted == ["x"]
    assert x.mean_shift == pytest.approx(3, abs=0.15)
    assert x.ks > 0.8
    assert x.psi > 5
    assert x.mean_a == pytest.approx(a["x"].mean()) and x.std_a == pytest.approx(a["x"].std())


def test_the_same_distribution_resampled_is_not_drifted():
    rng = np.random.default_rng(7)
    a = pd.DataFrame({"x": rng.normal(size=4000), "k": rng.choice(["a", "b", "c"], 4000, p=[0.5, 0.3, 0.2])})
    b = pd.DataFrame({"x": rng.normal(size=4000), "k": rng.choice(["a", "b", "c"], 4000, p=[0.5, 0.3, 0.2])})
    d = diff_frames(a, b)
    assert d.drifted == []
    x, k = d.columns
    assert x.ks < 0.05 and x.psi < 0.02 and abs(x.mean_shift) < 0.1
    assert k.share_shift < 0.03 and k.psi < 0.01
    assert d.only_in_a == 4000 and d.only_in_b == 4000  # every row differs, yet nothing drifted


@pytest.mark.parametrize(("copies", "drifted"), [(1, False), (100, True)])
def test_a_modest_shift_is_flagged_only_when_the_sample_is_large_enough(copies, drifted):
    a = pd.DataFrame({"x": np.tile(np.arange(20.0), copies)})
    b = pd.DataFrame({"x": np.tile(np.arange(3.0, 23.0), copies)})
    x = diff_frames(a, b).columns[0]
    assert x.psi > 0.2  # PSI alone would call 20 rows drifted
    assert x.ks == pytest.approx(0.15)
    assert x.drifted is drifted


def test_categorical_share_shift_is_the_total_variation_distance():
    a = pd.DataFrame({"k": ["a"] * 50 + ["b"] * 30 + ["c"] * 20})
    b = pd.DataFrame({"k": ["a"] * 30 + ["b"] * 30 + ["c"] * 10 + ["d"] * 30})
    k = diff_frames(a, b).columns[0]
    p = {"a": 0.5, "b": 0.3, "c": 0.2, "d": 0.0}
    q = {"a": 0.3, "b": 0.3, "c": 0.1, "d": 0.3}
    assert k.kind == "categorical"
    assert k.share_shift == pytest.approx(0.5 * sum(abs(q[v] - p[v]) for v in p)) == pytest.approx(0.3)
    eps = 1e-4
    psi = sum((max(q[v], eps) - max(p[v], eps)) * math.log(max(q[v], eps) / max(p[v], eps)) for v in p)
    assert k.psi == pytest.approx(psi)
    assert [(v, round(sa, 6), round(sb, 6)) for v, sa, sb in k.top_changes] == [
        ("d", 0.0, 0.3),
        ("a", 0.5, 0.3),
        ("c", 0.2, 0.1),
    ]
    assert k.drifted


@pytest.mark.parametrize(("nulls", "drifted"), [(4, False), (5, True), (30, True)])
def test_a_null_rate_change_of_five_points_is_flagged(nulls, drifted):
    values = np.arange(100.0)
    b = values.copy()
    b[np.linspace(0, 99, nulls).astype(int)] = np.nan  # spread out: the values left keep their distribution
    labels = pd.Series(["u", "v"] * 50)
    d = diff_frames(
        pd.DataFrame({"x": values, "k": labels}),
        pd.DataFrame({"x": b, "k": labels.where(~np.isnan(b))}),
    )
    for column in d.columns:
        assert column.null_rate_a == 0.0
        assert column.null_rate_b == pytest.approx(nulls / 100)
        assert column.drifted is drifted
    assert d.only_in_a == d.only_in_b == nulls


def test_limit_caps_the_example_rows_but_not_the_counts():
    a = pd.DataFrame({"x": range(100)})
    b = pd.DataFrame({"x": range(50, 170)})
    d = diff_frames(a, b, limit=3)
    assert (d.only_in_a, d.only_in_b) == (50, 70)
    assert d.rows_only_in_a == [{"x": 0}, {"x": 1}, {"x": 2}]
    assert d.rows_only_in_b == [{"x": 100}, {"x": 101}, {"x": 102}]
    assert diff_frames(a, b, limit=0).rows_only_in_a == []


def test_to_json_is_strict_json_and_round_trips_the_key_fields():
    a, b = constructed()
    b.loc[0, "new"] = np.nan
    d = diff_frames(a, b, a="v1", b="v2")
    out = json.loads(json.dumps(d.to_json(), allow_nan=False))
    assert out["added"] == [["new", "double"]]
    assert out["removed"] == [["gone", "string"]]
    assert out["retyped"] == [["score", "int64", "double"], ["code", "int64", "string"]]
    assert (out["only_in_a"], out["only_in_b"], out["rows_a"], out["rows_b"]) == (2, 1, 6, 5)
    assert out["rows_only_in_a"] == d.rows_only_in_a and out["rows_only_in_b"] == d.rows_only_in_b
    assert (out["identical"], out["drifted"]) == (False, d.drifted)
    assert [c["name"] for c in out["columns"]] == ["id", "name", "score", "code"]
    assert [c["drifted"] for c in out["columns"]] == [c.drifted for c in d.columns]
    assert out["columns"][1]["share_shift"] == pytest.approx(d.columns[1].share_shift)
    rebuilt = DataDiff(
        **{k: v for k, v in out.items() if k not in ("columns", "identical", "drifted")},
        columns=[ColumnDrift(**{k: v for k, v in c.items() if k != "drifted"}) for c in out["columns"]],
    )
    assert (rebuilt.identical, rebuilt.drifted) == (d.identical, d.drifted)


def test_a_constant_column_that_changes_value_is_drifted():
    x = diff_frames(pd.DataFrame({"x": [5.0] * 200}), pd.DataFrame({"x": [6.0] * 200})).columns[0]
    assert x.ks == 1.0
    assert x.drifted


def test_diff_snapshots_compares_stored_versions_by_ref_and_refuses_tampered_bytes(tmp_path):
    store = SnapshotStore(LocalStorage(tmp_path))
    a, b = constructed()
    first = store.write_table("t", a).snapshot
    second = store.write_table("t", b).snapshot
    d = diff_snapshots(store, first.id[:6], "t", limit=1)
    assert (d.a, d.b) == (first.ref, second.ref)
    assert (d.only_in_a, d.only_in_b, d.retyped) == (2, 1, [("score", "int64", "double"), ("code", "int64", "string")])
    assert d.rows_only_in_a == [{"id": 3, "name": "c", "score": 30, "code": 9, "gone": "z"}]

    stored = tmp_path / first.key
    stored.write_bytes(stored.read_bytes()[:-1] + b"\0")
    with pytest.raises(IntegrityError, match=f"no longer match snapshot {first.ref}"):
        diff_snapshots(store, first, second)
