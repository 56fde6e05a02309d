"""Train a model on whatever columns the table has, and put it to the approval gate.

scikit-learn is imported where it is used, so that a process running only
another step (one pod per step) starts without loading it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pandas as pd
from mlops_template import StepContext, split_heldout, training_rows

from ..lib.evaluation import confusion_matrix_figure, residuals_figure

if TYPE_CHECKING:
    from sklearn.pipeline import Pipeline


def train_model(ctx: StepContext) -> None:
    p, target = ctx.params, ctx.params["target"]
    featurized = ctx.read("featurized", engine=ctx.engine)
    # All rows, or a seeded sample (stratified by class) past max_train_rows: Dask brings only the sample here.
    rows = training_rows(featurized, target, ctx.task, limit=p.get("max_train_rows"), seed=p["seed"])
    ctx.log.info(rows.describe())
    ctx.log_metrics(rows.metrics())
    train, heldout = split_heldout(rows.rows, target, ctx.task, test_size=p["test_size"], seed=p["seed"])
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
