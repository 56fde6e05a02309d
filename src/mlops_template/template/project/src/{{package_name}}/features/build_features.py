"""Derive model features from the cleaned data."""

import pandas as pd
from mlops_template import StepContext


def feat_data(ctx: StepContext) -> None:
    ctx.write("featurized", add_features(ctx.read("processed")))


def add_features(df: pd.DataFrame) -> pd.DataFrame:
    """Areas and shape ratios separate the species better than raw lengths alone."""
    return df.assign(
        petal_area=df["petal_length"] * df["petal_width"],
        sepal_area=df["sepal_length"] * df["sepal_width"],
        petal_ratio=df["petal_length"] / df["petal_width"],
    )
