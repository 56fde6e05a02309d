"""A dataset logged as a run's input carries the schema MLflow itself would infer, without its per-value cost."""

from __future__ import annotations

import json

import mlflow
import numpy as np
import pandas as pd
import pytest

from mlops_template.tracking.inputs import dataset_schema, log_dataset

COLUMNS = {
    "int": [1, 2, 3],
    "float_with_gap": [1.0, np.nan, 2.0],
    "text_with_gap": ["a", None, "c"],
    "text": ["a", "b", "c"],
    "bool": [True, False, True],
    "dates_with_gap": pd.to_datetime(["2024-01-01", None, "2024-01-03"]),
    "dates_utc": pd.to_datetime(["2024-01-01"] * 3).tz_localize("UTC"),
    "all_missing": [None, None, None],
    "bytes": [b"a", b"b", None],
    "category": pd.Categorical(["x", "y", "x"]),
    "nullable_int": pd.array([1, None, 3], dtype="Int64"),
    "string_dtype": pd.array(["a", None, "b"], dtype="string"),
    "ints_as_objects": pd.Series([1, 2, 3], dtype=object),
    "nan_and_text": [np.nan, "a", "b"],
    "float32": np.array([1, 2, 3], dtype="float32"),
    "uint8": np.array([1, 2, 3], dtype="uint8"),
    "mixed": [1, "a", 2.0],
}


def mlflow_schema(df: pd.DataFrame) -> str | None:
    """The schema JSON `mlflow.data.from_pandas` records for `df`."""
    return mlflow.data.from_pandas(df, source="/tmp/x.parquet", name="x", digest="d").to_dict()["schema"]


def our_schema(df: pd.DataFrame) -> str | None:
    schema = dataset_schema(df)
    return json.dumps({"mlflow_colspec": schema.to_dict()}) if schema else None


@pytest.mark.parametrize("column", sorted(COLUMNS))
def test_each_kind_of_column_gets_mlflow_s_own_schema(column):
    df = pd.DataFrame({column: COLUMNS[column]})
    assert our_schema(df) == mlflow_schema(df)


def test_a_whole_frame_and_an_empty_one_get_mlflow_s_own_schema():
    whole = pd.DataFrame({k: v for k, v in COLUMNS.items() if k != "mixed"})
    assert our_schema(whole) == mlflow_schema(whole)
    assert '"required": false' in our_schema(whole) and '"required": true' in our_schema(whole)
    empty = pd.DataFrame({"a": pd.Series([], dtype=object), "b": pd.Series([], dtype="float64")})
    assert our_schema(empty) == mlflow_schema(empty)
    # A column MLflow cannot type leaves the whole schema out, as MLflow does.
    assert our_schema(pd.DataFrame({"mixed": COLUMNS["mixed"]})) is None


def test_a_logged_dataset_is_stored_with_its_digest_source_schema_and_profile(tmp_path):
    df = pd.DataFrame({k: v for k, v in COLUMNS.items() if k != "mixed"})
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlruns.db'}")
    try:
        # Its own experiment: another test's process-wide active experiment is not in this store.
        with mlflow.start_run(experiment_id=mlflow.create_experiment("inputs")) as run:
            log_dataset(
                df, source=str(tmp_path / "t.parquet"), name="table", digest="6bb724a38790a124", context="training"
            )
        stored = mlflow.get_run(run.info.run_id).inputs.dataset_inputs
    finally:
        mlflow.set_tracking_uri(None)
    assert len(stored) == 1
    dataset = stored[0].dataset
    assert (dataset.name, dataset.digest) == ("table", "6bb724a38790a124")
    assert dataset.schema == mlflow_schema(df)
    assert json.loads(dataset.profile) == {"num_rows": 3, "num_elements": 3 * len(df.columns)}
    assert {t.key: t.value for t in stored[0].tags}["mlflow.data.context"] == "training"
