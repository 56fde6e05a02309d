"""The column a model learns to predict: is it there, does it fit the task, and the held-out split.

A team's own table meets these checks first, so a wrong target or task ends
in one line that says which setting to change, before any model is trained.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mlops_template.config.metrics import CLASSIFICATION, REGRESSION
from mlops_template.data.engines import is_dask
from mlops_template.errors import DataError

if TYPE_CHECKING:
    import pandas as pd

# A numeric target with more distinct values than this is a quantity, not a label.
_MAX_INTEGER_CLASSES = 50
_MAX_FRACTIONAL_CLASSES = 20


def check_target(df: pd.DataFrame, target: str, task: str, *, table: str = "the table") -> None:
    """Raise :class:`DataError` unless `df` has rows and a `target` column a `task` model can learn.

    A Dask DataFrame is checked for the column only (its values would take a pass over
    the whole table); `split_heldout` checks the values where the model is trained.
    """
    if target not in df.columns:
        import difflib

        columns = [str(c) for c in df.columns]
        close = difflib.get_close_matches(target, columns, n=1)
        raise DataError(
            f"target column '{target}' is not in {table} (columns: {', '.join(columns) or '(none)'})"
            f"{f'; did you mean {close[0]!r}?' if close else ''}; "
            "set target under [params] in mlops.toml or pass -P target=<column>"
        )
    if is_dask(df):
        return
    if df.empty:
        raise DataError(f"{table} has no rows; check the files in raw/ and the cleaning in make_data")
    values = df[target].dropna()
    if values.empty:
        raise DataError(f"target column '{target}' has no values in {len(df)} rows of {table}")
    problem = _classification_problem(values, target) if task == CLASSIFICATION else _regression_problem(values, target)
    if problem:
        raise DataError(problem)


def split_heldout(
    df: pd.DataFrame, target: str, task: str, *, test_size: float = 0.3, seed: int | None = None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Check the target, then split off held-out rows (stratified by class where every class allows it)."""
    from sklearn.model_selection import train_test_split

    check_target(df, target, task)
    df = df.dropna(subset=[target]).reset_index(drop=True)
    if len(df) < 4:
        raise DataError(f"{len(df)} labelled rows are too few to train and hold some out; add data")
    stratify = None
    if task == CLASSIFICATION:
        counts = df[target].value_counts()
        held = test_size if isinstance(test_size, int) else round(len(df) * test_size)
        if counts.min() >= 2 and len(counts) <= held <= len(df) - len(counts):
            stratify = df[target]
    train, heldout = train_test_split(df, test_size=test_size, random_state=seed, stratify=stratify)
    return train.reset_index(drop=True), heldout.reset_index(drop=True)


def _classification_problem(values: pd.Series, target: str) -> str | None:
    import pandas as pd

    distinct = values.nunique()
    if distinct < 2:
        return (
            f"target column '{target}' has one class ({values.iloc[0]!r}) in {len(values)} rows; "
            "a classifier needs at least two: check the target column or the raw data"
        )
    if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
        fractional = bool((values.astype(float) % 1 != 0).any())
        if distinct > (_MAX_FRACTIONAL_CLASSES if fractional else _MAX_INTEGER_CLASSES):
            return (
                f"target column '{target}' holds {distinct} distinct numbers ({values.min():g} to {values.max():g}), "
                'which looks like regression; set task = "regression" under [model] in mlops.toml'
            )
    return None


def _regression_problem(values: pd.Series, target: str) -> str | None:
    import pandas as pd

    distinct = values.nunique()
    numeric = pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values)
    if not numeric or distinct <= 2:
        shown = ", ".join(map(str, values.drop_duplicates().head(3))) + (", …" if distinct > 3 else "")
        kind = "numbers" if numeric else "text" if not pd.api.types.is_bool_dtype(values) else "true/false"
        if distinct < 2 and numeric:
            return f"target column '{target}' has one value ({shown}) in {len(values)} rows; there is nothing to learn"
        return (
            f"target column '{target}' holds {kind} with {distinct} distinct values ({shown}), "
            'which looks like classification; set task = "classification" under [model] in mlops.toml'
        )
    return None


__all__ = ["CLASSIFICATION", "REGRESSION", "check_target", "split_heldout"]
