"""Learning tasks and the metrics that judge them.

A gate metric is `f1`, `precision` or `recall` (their macro average over the
classes), or any scikit-learn scorer name (`roc_auc`, `r2`,
`neg_root_mean_squared_error`, …). Scorers are higher-is-better by
construction (losses are negated), so every gate compares the same way.
Which task a name belongs to is known without importing scikit-learn, so
`mlops.toml` is checked cheaply when it is loaded.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

CLASSIFICATION = "classification"
REGRESSION = "regression"
TASKS = (CLASSIFICATION, REGRESSION)

MACRO = ("f1", "precision", "recall")
DEFAULT_METRIC = {CLASSIFICATION: "f1", REGRESSION: "r2"}

_REGRESSION_PREFIXES = ("r2", "explained_variance", "neg_max_error", "neg_mean_", "neg_median_", "neg_root_mean_")
_REGRESSION_NAMES = {"d2_absolute_error_score"}
_CLUSTERING_NAMES = {
    "adjusted_mutual_info_score",
    "adjusted_rand_score",
    "completeness_score",
    "fowlkes_mallows_score",
    "homogeneity_score",
    "mutual_info_score",
    "normalized_mutual_info_score",
    "rand_score",
    "v_measure_score",
}


def metric_task(metric: str) -> str | None:
    """The task a metric name judges: classification, regression, or None for a clustering score."""
    if metric in _CLUSTERING_NAMES:
        return None
    if metric in _REGRESSION_NAMES or metric.startswith(_REGRESSION_PREFIXES):
        return REGRESSION
    return CLASSIFICATION


def metric_problem(metric: str, task: str) -> str | None:
    """Why `metric` cannot gate a `task` model, or None when it can (checked without scikit-learn)."""
    if task not in TASKS:
        return f'task \'{task}\' is unknown; use "classification" or "regression"'
    kind = metric_task(metric)
    if kind is None:
        return f"'{metric}' scores a clustering, not a {task} model; use e.g. \"{DEFAULT_METRIC[task]}\""
    if kind != task:
        return f'\'{metric}\' is a {kind} metric but task = "{task}"; use e.g. "{DEFAULT_METRIC[task]}"'
    return None


def check_scorer(metric: str) -> None:
    """Raise ValueError naming close matches when `metric` is neither a macro name nor a scikit-learn scorer."""
    if metric in MACRO:
        return
    from sklearn.metrics import get_scorer_names

    from mlops_template.errors import choices

    names = get_scorer_names()
    if metric not in names:
        hint = (
            " (losses are negated: rmse is neg_root_mean_squared_error)"
            if "error" in metric or "rmse" in metric
            else ""
        )
        raise ValueError(f"'{metric}' is not a scikit-learn scorer{hint}; {choices(names, metric)}")


def reported_metrics(task: str, y_true: Any, y_pred: Any) -> dict[str, float]:
    """The metrics every model of a task is logged with, computed on its held-out rows."""
    import numpy as np
    from sklearn import metrics

    if task == REGRESSION:
        return {
            "r2": float(metrics.r2_score(y_true, y_pred)),
            "rmse": float(np.sqrt(metrics.mean_squared_error(y_true, y_pred))),
            "mae": float(metrics.mean_absolute_error(y_true, y_pred)),
        }
    precision, recall, f1, _ = metrics.precision_recall_fscore_support(y_true, y_pred, average="macro", zero_division=0)
    return {
        "accuracy": float(metrics.accuracy_score(y_true, y_pred)),
        "f1": float(f1),
        "precision": float(precision),
        "recall": float(recall),
    }


def score(model: Any, X: pd.DataFrame, y: pd.Series | np.ndarray, metric: str, *, task: str) -> float:
    """`metric` of `model` on rows `X` with true values `y`.

    Macro names use the model's predictions; a scorer gets the model itself,
    so probability scorers (`roc_auc`, `neg_log_loss`) work with any model
    that has `predict_proba`. A model that is not a scikit-learn estimator
    (a pyfunc, say) is wrapped so predict-based scorers apply to it as well.
    """
    if metric in MACRO:
        from sklearn.metrics import precision_recall_fscore_support

        precision, recall, f1, _ = precision_recall_fscore_support(
            y, predict(model, X), average="macro", zero_division=0
        )
        return float({"f1": f1, "precision": precision, "recall": recall}[metric])
    from sklearn.metrics import get_scorer

    return float(get_scorer(metric)(_estimator(model, y, task), X, y))


def predict(model: Any, X: pd.DataFrame) -> np.ndarray:
    """Predictions as a flat array, whatever the model returns (array, Series, one-column frame)."""
    import numpy as np

    out = np.asarray(model.predict(X))
    return out.ravel() if out.ndim == 2 and out.shape[1] == 1 else out


def _estimator(model: Any, y: Any, task: str) -> Any:
    from sklearn.base import BaseEstimator

    if isinstance(model, BaseEstimator):  # XGBoost's and LightGBM's scikit-learn models are too
        return model
    return _Predictor(model, y, task)


class _Predictor:
    """A predict-only model seen through scikit-learn's eyes, so scorers can call it."""

    def __init__(self, model: Any, y: Any, task: str) -> None:
        import numpy as np

        self.model = model
        self._estimator_type = "classifier" if task == CLASSIFICATION else "regressor"
        if task == CLASSIFICATION:
            self.classes_ = np.unique(np.asarray(y))

    def __sklearn_tags__(self):
        from sklearn.utils import ClassifierTags, RegressorTags, Tags, TargetTags

        classifier = self._estimator_type == "classifier"
        return Tags(
            estimator_type=self._estimator_type,
            target_tags=TargetTags(required=True),
            classifier_tags=ClassifierTags() if classifier else None,
            regressor_tags=None if classifier else RegressorTags(),
        )

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        return predict(self.model, X)
