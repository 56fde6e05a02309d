"""Scoring a model on rows with a gate metric (the names and their rules: `config.metrics`)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

from mlops_template.config.metrics import CLASSIFICATION, ERRORS, MACRO, REGRESSION


def check_scorer(metric: str) -> None:
    """Raise ValueError naming close matches when `metric` is neither a macro name, an error nor a scikit-learn scorer."""
    if metric in MACRO or metric in ERRORS:
        return
    from sklearn.metrics import get_scorer_names

    from mlops_template.errors import choices

    names = get_scorer_names()
    if metric not in names:
        hint = (
            f" (errors: {', '.join(ERRORS)}, lower is better; scikit-learn negates its losses: "
            "neg_root_mean_squared_error)"
            if "error" in metric or "rmse" in metric
            else ""
        )
        raise ValueError(f"'{metric}' is not a scikit-learn scorer{hint}; {choices(names, metric)}")


def reported_metrics(task: str, y_true: Any, y_pred: Any) -> dict[str, float]:
    """The metrics every model of a task is logged with, computed on its held-out rows."""
    from sklearn import metrics

    if task == REGRESSION:
        return {
            "r2": float(metrics.r2_score(y_true, y_pred)),
            "rmse": float(metrics.root_mean_squared_error(y_true, y_pred)),
            "mae": float(metrics.mean_absolute_error(y_true, y_pred)),
        }
    y_true, y_pred = _coded(y_true, y_pred)
    precision, recall, f1, _ = metrics.precision_recall_fscore_support(y_true, y_pred, average="macro", zero_division=0)
    return {
        "accuracy": float(metrics.accuracy_score(y_true, y_pred)),
        "f1": float(f1),
        "precision": float(precision),
        "recall": float(recall),
    }


def score(model: Any, X: pd.DataFrame, y: pd.Series | np.ndarray, metric: str, *, task: str) -> float:
    """`metric` of `model` on rows `X` with true values `y`.

    Macro names and errors use the model's predictions; a scorer gets the model itself,
    so probability scorers (`roc_auc`, `neg_log_loss`) work with any model
    that has `predict_proba`. A model that is not a scikit-learn estimator
    (a pyfunc, say) is wrapped so predict-based scorers apply to it as well.
    """
    if metric in MACRO:
        from sklearn.metrics import precision_recall_fscore_support

        precision, recall, f1, _ = precision_recall_fscore_support(
            *_coded(y, predict(model, X)), average="macro", zero_division=0
        )
        return float({"f1": f1, "precision": precision, "recall": recall}[metric])
    if metric in ERRORS:
        from sklearn import metrics

        error = {
            "rmse": metrics.root_mean_squared_error,
            "mae": metrics.mean_absolute_error,
            "mse": metrics.mean_squared_error,
        }[metric]
        return float(error(y, predict(model, X)))
    from sklearn.metrics import get_scorer

    return float(get_scorer(metric)(_estimator(model, y, task), X, y))


def predict(model: Any, X: pd.DataFrame) -> np.ndarray:
    """Predictions as a flat array, whatever the model returns (array, Series, one-column frame)."""
    import numpy as np

    out = np.asarray(model.predict(X))
    return out.ravel() if out.ndim == 2 and out.shape[1] == 1 else out


def _coded(y_true: Any, y_pred: Any) -> tuple[Any, Any]:
    """Text labels as integer codes in the labels' sorted order, for scikit-learn to count in C.

    scikit-learn sorts and compares text labels as Python objects, one call per
    value (seconds for a few hundred thousand rows); codes in the same order give
    the same per-class counts in the same order, so the same metrics to the bit.
    Anything but text on both sides is passed on unchanged, to be checked there.
    """
    import numpy as np
    import pandas as pd

    true, pred = np.asarray(y_true), np.asarray(y_pred)
    if true.ndim != 1 or pred.ndim != 1 or len(true) != len(pred):
        return y_true, y_pred
    if not all(pd.api.types.infer_dtype(a, skipna=False) == "string" for a in (true, pred)):
        return y_true, y_pred
    codes, _ = pd.factorize(np.concatenate([true.astype(object), pred.astype(object)]), sort=True)
    return codes[: len(true)], codes[len(true) :]


def _estimator(model: Any, y: Any, task: str) -> Any:
    from sklearn.base import BaseEstimator

    if isinstance(model, BaseEstimator):  # XGBoost's and LightGBM's scikit-learn models are too
        return model
    if getattr(model, "_estimator_type", None):  # outputs recorded from an estimator (`models.isolation.Recorded`)
        return model
    return _Predictor(model, y, task)


def estimator_tags(kind: str | None):
    """scikit-learn's tags for a stand-in model of `kind` ("classifier", "regressor" or None), so scorers accept it."""
    from sklearn.utils import ClassifierTags, RegressorTags, Tags, TargetTags

    return Tags(
        estimator_type=kind,
        target_tags=TargetTags(required=True),
        classifier_tags=ClassifierTags() if kind == "classifier" else None,
        regressor_tags=RegressorTags() if kind == "regressor" else None,
    )


class _Predictor:
    """A predict-only model seen through scikit-learn's eyes, so scorers can call it."""

    def __init__(self, model: Any, y: Any, task: str) -> None:
        import numpy as np

        self.model = model
        self._estimator_type = "classifier" if task == CLASSIFICATION else "regressor"
        if task == CLASSIFICATION:
            self.classes_ = np.unique(np.asarray(y))

    def __sklearn_tags__(self):
        return estimator_tags(self._estimator_type)

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        return predict(self.model, X)
