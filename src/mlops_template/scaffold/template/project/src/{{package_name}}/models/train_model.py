"""Train a model on whatever columns the table has, and put it to the approval gate.

With the Dask engine the featurized table is counted and, when it has more than
`max_train_rows`, sampled on the workers: only the rows trained on come into this
process. scikit-learn is imported where it is used, so that a process running
only another step (one pod per step) starts without loading it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from mlops_template import StepContext, split_heldout

from ..lib.evaluation import confusion_matrix_figure, residuals_figure

if TYPE_CHECKING:
    from sklearn.pipeline import Pipeline


def train_model(ctx: StepContext) -> None:
    p, target = ctx.params, ctx.params["target"]
    df = rows_to_train_on(ctx, target, limit=p.get("max_train_rows"), seed=p["seed"])
    train, heldout = split_heldout(df, target, ctx.task, test_size=p["test_size"], seed=p["seed"])
    X = train.drop(columns=[target])
    model = build_model(X, ctx.task, max_depth=p["max_depth"], max_iter=p["max_iter"], seed=p["seed"])
    model.fit(X, train[target])
    ctx.log_metrics({"rows_trained_on": len(train)})  # the sample less the held-out rows

    predicted = model.predict(heldout.drop(columns=[target]))
    if ctx.task == "classification":
        figure = confusion_matrix_figure(heldout[target], predicted, labels=model.classes_)
    else:
        figure = residuals_figure(heldout[target], predicted)
    ctx.log_figure(figure, "evaluation.png")
    # Metrics, the gate (against the champion on rows neither model trained on), registration.
    ctx.propose_model(model, train=train, heldout=heldout, target=target)


def rows_to_train_on(ctx: StepContext, target: str, *, limit: int | None, seed: int) -> pd.DataFrame:
    """The featurized table in memory: whole, or a seeded sample of `limit` rows when it has more.

    A classification sample keeps every class in proportion (each at least one row); a
    regression sample is a plain one. Both engines sample alike; Dask collects only the sample.
    """
    df = ctx.read("featurized", engine=ctx.engine)
    dask = ctx.engine == "dask"
    by = target if ctx.task == "classification" else None
    if by is not None:  # rows per class: the one pass that counts the table
        counts = df[by].value_counts().compute() if dask else df[by].value_counts()
    else:
        counts = pd.Series([len(df)])
    available = int(counts.sum())
    if limit is None or available <= limit:
        sample = df.compute().reset_index(drop=True) if dask else df
        ctx.log.info("training on all %d rows (max_train_rows = %s)", available, limit)
    else:
        quotas = class_quotas(counts, limit)
        if dask:  # on the workers: each row's seeded key, a few more rows than needed kept per class
            kept = (quotas / counts + 5 * np.sqrt(quotas / counts / counts) + 10 / counts).clip(upper=1.0)
            meta = df._meta.assign(**{SAMPLE_KEY: pd.Series(dtype="float64")})
            df = df.map_partitions(_keyed, by, kept.to_dict(), seed, meta=meta).compute()
        else:
            df = df.assign(**{SAMPLE_KEY: np.random.default_rng([seed, 0]).random(len(df))})
        sample = take_smallest_keys(df, by, quotas).drop(columns=SAMPLE_KEY)
        kind = "stratified" if by is not None else "random"
        message = "training on a %s sample of %d of %d rows (max_train_rows = %d)"
        ctx.log.info(message, kind, len(sample), available, limit)
    ctx.log_metrics({"rows_available": available, "rows_sampled": len(sample)})
    return sample


SAMPLE_KEY = "__sample_key__"


def class_quotas(counts: pd.Series, limit: int) -> pd.Series:
    """Rows to take per class: in proportion to its rows, at least one, `limit` in all (largest remainders)."""
    share = counts * limit / counts.sum()
    quotas = share.astype("int64").clip(lower=1)
    short = limit - int(quotas.sum())
    if short > 0:  # the classes with the largest fractions left over get one row more
        quotas.loc[(share - share.astype("int64")).sort_values(ascending=False, kind="stable").index[:short]] += 1
    for _ in range(-short):  # one row granted to every small class is taken from the largest
        if quotas.max() <= 1:
            break
        quotas.loc[quotas.idxmax()] -= 1
    return quotas


def _keyed(part: pd.DataFrame, by: str | None, kept: dict, seed: int, partition_info=None) -> pd.DataFrame:
    """On a worker: a seeded random key per row, and the rows whose key is under their class's share."""
    key = np.random.default_rng([seed, (partition_info or {}).get("number", 0)]).random(len(part))
    share = part[by].map(kept).to_numpy("float64", na_value=0.0) if by is not None else kept[0]
    return part.assign(**{SAMPLE_KEY: key})[key < share]


def take_smallest_keys(df: pd.DataFrame, by: str | None, quotas: pd.Series) -> pd.DataFrame:
    """The rows with each class's `quotas[class]` smallest keys, in their order: a uniform sample per class."""
    if by is None:
        rank, quota = df[SAMPLE_KEY].rank(method="first"), quotas.iloc[0]
    else:
        rank, quota = df.groupby(by)[SAMPLE_KEY].rank(method="first"), df[by].map(quotas)
    return df[rank <= quota].reset_index(drop=True)


def build_model(X: pd.DataFrame, task: str, *, max_depth: int, max_iter: int, seed: int) -> Pipeline:
    """Impute and encode the numeric and text columns found in X, then gradient-boosted trees."""
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder

    numeric = X.select_dtypes("number").columns.tolist()
    categorical = [c for c in X.columns if c not in numeric]
    prepare = ColumnTransformer(
        [
            ("numeric", SimpleImputer(strategy="median"), numeric),
            # Missing text is a category of its own; rare and unseen values share one column.
            (
                "categorical",
                OneHotEncoder(handle_unknown="infrequent_if_exist", max_categories=20, sparse_output=False),
                categorical,
            ),
        ]
    )
    estimator = HistGradientBoostingClassifier if task == "classification" else HistGradientBoostingRegressor
    return Pipeline(
        [("prepare", prepare), ("model", estimator(max_depth=max_depth, max_iter=max_iter, random_state=seed))]
    )
