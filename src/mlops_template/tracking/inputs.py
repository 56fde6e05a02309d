"""Logging a dataset as a run's input: our snapshot id as its digest, its schema read from the column types.

`mlflow.data.from_pandas` infers the schema value by value (a Python call per
cell of every text column, and per cell of every column to decide whether it
is required): about 15 s per million rows of a ten-column table. The schema
built here is the same (a test compares the JSON on frames of every kind),
decided from the dtypes in C; Python looks only at values that pandas already
marks missing, and only at text columns pandas cannot type on its own.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd
    from mlflow.types import Schema

# What pandas' own inference says of an object column → MLflow's type; anything else is left to MLflow.
_OBJECT_TYPES = {"string": "string", "bytes": "binary"}


def log_dataset(
    df: pd.DataFrame, *, source: str, name: str, digest: str, context: str, rows: int | None = None
) -> None:
    """Log `df` on the active run as the dataset `name` read from or written to `source`.

    For a table that is not in memory (a Dask frame), `df` is its empty meta
    and `rows` its row count from the snapshot's manifest.
    """
    import mlflow

    with warnings.catch_warnings():
        # MLflow registers local files under two equivalent source types and warns that it picked one.
        warnings.filterwarnings("ignore", message="The specified dataset source can be interpreted")
        dataset = mlflow.data.from_pandas(df, source=source, name=name, digest=digest)
        dataset.__dict__["schema"] = dataset_schema(df)  # the value of its cached `schema` property
        if rows is not None:
            dataset.__class__ = _counted(type(dataset), rows, rows * len(df.columns))
        mlflow.log_input(dataset, context=context)


def _counted(kind: type, rows: int, elements: int) -> type:
    """The dataset class with the profile (rows, elements) of a table known from its manifest, not its frame."""

    class Counted(kind):
        @property
        def profile(self) -> dict[str, int]:
            return {"num_rows": rows, "num_elements": elements}

    return Counted


def dataset_schema(df: pd.DataFrame) -> Schema | None:
    """The schema `mlflow.data.from_pandas(df)` would record, without a Python call per value."""
    from mlflow.types import ColSpec, Schema
    from mlflow.types.utils import _infer_pandas_column

    try:
        return Schema(
            [ColSpec(_column_type(df[c], _infer_pandas_column), name=c, required=_required(df[c])) for c in df.columns]
        )
    except Exception:  # noqa: BLE001 - MLflow logs no schema for a frame it cannot type either
        return None


def _column_type(col: pd.Series, infer):
    import pandas as pd
    from mlflow.types import DataType

    if col.dtype.kind == "O":
        kind = _OBJECT_TYPES.get(pd.api.types.infer_dtype(col, skipna=True))
        if kind is not None:
            return DataType[kind]
    return infer(col)  # a typed column by its dtype; a mixed or empty object column as MLflow decides it


def _required(col: pd.Series) -> bool:
    """True when no value is None or NaN: MLflow's rule, applied only to what pandas marks missing."""
    from mlflow.types.utils import _is_none_or_nan

    missing = col[col.isna().to_numpy()]
    return not any(_is_none_or_nan(value) for value in missing)
