"""Obtain the raw data and clean it."""

from pathlib import Path

import pandas as pd
from mlops_template import StepContext, check_target


def make_data(ctx: StepContext) -> None:
    p = ctx.params
    # ctx.engine: "pandas", or "dask" when the raw data is large ([data] engine in mlops.toml).
    if p.get("query"):  # a database instead of files: [steps.make_data.params] query, connection (README)
        # cache_key: the state of the tables meant (a date); without one, a database is read again on every run.
        query_params = p.get("query_params", {})
        raw = ctx.read_sql(
            p["query"], connection=p["connection"], params=query_params, engine=ctx.engine, cache_key=p.get("cache_key")
        )
    else:
        raw = ctx.read_raw(engine=ctx.engine) if ctx.has_raw() else bundled_iris()
    target = p["target"]
    check_target(raw, target, ctx.task, table="the raw data")  # a wrong target or task: one clear line
    ctx.write("processed", clean(raw, target=target))
    # Row counts from the snapshots' manifests, so a Dask table is not computed again to count it.
    source = Path(p["query"]).stem if p.get("query") else "raw"  # what read_sql or read_raw kept it as
    read = len(raw) if isinstance(raw, pd.DataFrame) else ctx.snapshot(source).rows
    kept = ctx.snapshot("processed").rows
    ctx.log.info("%d rows kept, %d duplicate or unlabelled dropped", kept, read - kept)


def clean(df: pd.DataFrame, *, target: str) -> pd.DataFrame:
    """Drop exact duplicate rows and rows without a target (a pandas or a Dask DataFrame)."""
    return df.drop_duplicates().dropna(subset=[target]).reset_index(drop=True)


def bundled_iris() -> pd.DataFrame:
    """scikit-learn's copy of the iris data, with snake_case columns and species names."""
    from sklearn.datasets import load_iris

    iris = load_iris(as_frame=True)
    df = iris.frame.rename(columns=lambda c: c.replace(" (cm)", "").replace(" ", "_"))
    df["species"] = iris.target_names[df.pop("target")]
    return df
