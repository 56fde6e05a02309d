"""Obtain the raw data and clean it."""

import pandas as pd
from mlops_template import StepContext, check_target


def make_data(ctx: StepContext) -> None:
    raw = ctx.read_raw() if ctx.has_raw() else bundled_iris()
    target = ctx.params["target"]
    check_target(raw, target, ctx.task, table="the raw data")  # a wrong target or task: one clear line
    df = clean(raw, target=target)
    ctx.log.info("%d rows kept, %d duplicate or unlabelled dropped", len(df), len(raw) - len(df))
    ctx.write("processed", df)


def clean(df: pd.DataFrame, *, target: str) -> pd.DataFrame:
    """Drop exact duplicate rows and rows without a target."""
    return df.drop_duplicates().dropna(subset=[target]).reset_index(drop=True)


def bundled_iris() -> pd.DataFrame:
    """scikit-learn's copy of the iris data, with snake_case columns and species names."""
    from sklearn.datasets import load_iris

    iris = load_iris(as_frame=True)
    df = iris.frame.rename(columns=lambda c: c.replace(" (cm)", "").replace(" ", "_"))
    df["species"] = iris.target_names[df.pop("target")]
    return df
