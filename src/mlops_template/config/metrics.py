"""Metric names: the task each judges and which way is better, known without scikit-learn.

A gate metric is `f1`, `precision` or `recall` (their macro average over the
classes), `rmse`, `mae` or `mse` (regression errors, lower is better), or any
scikit-learn scorer name (`roc_auc`, `r2`, `neg_root_mean_squared_error`, …).
One direction rule serves the gate, `mlops runs --sort` and promotion.
`mlops.toml` is checked against these rules when it is loaded, before
anything heavy is imported.
"""

from __future__ import annotations

CLASSIFICATION = "classification"
REGRESSION = "regression"
TASKS = (CLASSIFICATION, REGRESSION)

MACRO = ("f1", "precision", "recall")
ERRORS = ("rmse", "mae", "mse")  # scored on the predictions; lower is better
DEFAULT_METRIC = {CLASSIFICATION: "f1", REGRESSION: "r2"}

_REGRESSION_PREFIXES = ("r2", "explained_variance", "neg_max_error", "neg_mean_", "neg_median_", "neg_root_mean_")
_REGRESSION_NAMES = {"d2_absolute_error_score", *ERRORS}
# Logged metric names where less is better, alone or as a suffix (`val_rmse`, `train_loss`).
_LOWER_IS_BETTER = (*ERRORS, "loss", "error", "log_loss")
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


def higher_is_better(metric: str) -> bool:
    """Which way `metric` is better: errors and losses (`rmse`, `val_mae`, `log_loss`) lower, the rest higher.

    scikit-learn scorers are higher-is-better by construction: they negate
    their losses (`neg_root_mean_squared_error`).
    """
    if metric.startswith("neg_"):
        return True
    return not any(metric == name or metric.endswith(f"_{name}") for name in _LOWER_IS_BETTER)


def better(a: float, b: float, metric: str) -> bool:
    """Whether `a` is strictly better than `b` as values of `metric`."""
    return a > b if higher_is_better(metric) else a < b


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
