"""Evaluation figures, shared by training and notebooks (the metrics are computed by mlops-template).

matplotlib and scikit-learn are imported where they are used, so that a process
running another step (one pod per step) starts without loading them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def confusion_matrix_figure(y_true, y_pred, *, labels) -> Figure:
    """A confusion matrix drawn on a standalone Figure (no GUI backend needed)."""
    from matplotlib.figure import Figure
    from sklearn.metrics import ConfusionMatrixDisplay

    figure = Figure(figsize=(4, 4), layout="constrained")
    ConfusionMatrixDisplay.from_predictions(y_true, y_pred, labels=labels, ax=figure.subplots(), colorbar=False)
    return figure


def residuals_figure(y_true, y_pred) -> Figure:
    """Residuals against predictions: a pattern here is signal the model missed."""
    from matplotlib.figure import Figure
    from sklearn.metrics import PredictionErrorDisplay

    figure = Figure(figsize=(4, 4), layout="constrained")
    PredictionErrorDisplay.from_predictions(y_true, y_pred, kind="residual_vs_predicted", ax=figure.subplots())
    return figure
