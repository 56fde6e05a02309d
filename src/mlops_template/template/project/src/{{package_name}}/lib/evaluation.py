"""Classification metrics and figures, shared by training and notebooks."""

from matplotlib.figure import Figure
from sklearn.metrics import ConfusionMatrixDisplay, accuracy_score, precision_recall_fscore_support


def classification_metrics(y_true, y_pred) -> dict[str, float]:
    precision, recall, f1, _ = precision_recall_fscore_support(y_true, y_pred, average="macro", zero_division=0)
    return {"accuracy": accuracy_score(y_true, y_pred), "f1": f1, "precision": precision, "recall": recall}


def confusion_matrix_figure(y_true, y_pred, *, labels) -> Figure:
    """A confusion matrix drawn on a standalone Figure (no GUI backend needed)."""
    figure = Figure(figsize=(4, 4), layout="constrained")
    ConfusionMatrixDisplay.from_predictions(y_true, y_pred, labels=labels, ax=figure.subplots(), colorbar=False)
    return figure
