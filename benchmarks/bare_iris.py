"""The rendered project's pipeline as a bare script: the same pandas/scikit-learn work, no tracking.

The baseline for `pipeline_overhead.py`: what a team would write without
mlops-template. It cleans bundled iris, derives the template's features,
writes the same parquet datasets, trains and evaluates the same decision tree,
draws the confusion matrix, saves the model with skops (the format the
template's logged models use), loads it back and writes predictions on the
held-out split.

    python benchmarks/bare_iris.py OUTDIR
"""

import sys
from pathlib import Path

import pandas as pd
import skops.io
from matplotlib.figure import Figure
from sklearn.datasets import load_iris
from sklearn.metrics import ConfusionMatrixDisplay, accuracy_score, precision_recall_fscore_support
from sklearn.model_selection import train_test_split
from sklearn.tree import DecisionTreeClassifier

TARGET, SEED, TEST_SIZE, MAX_DEPTH = "species", 42, 0.3, 5


def main(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)

    # make_data
    iris = load_iris(as_frame=True)
    df = iris.frame.rename(columns=lambda c: c.replace(" (cm)", "").replace(" ", "_"))
    df[TARGET] = iris.target_names[df.pop("target")]
    df = df.drop_duplicates().dropna(subset=[TARGET]).reset_index(drop=True)
    df.to_parquet(out / "processed.parquet")

    # feat_data
    df = df.assign(
        petal_area=df["petal_length"] * df["petal_width"],
        sepal_area=df["sepal_length"] * df["sepal_width"],
        petal_ratio=df["petal_length"] / df["petal_width"],
    )
    df.to_parquet(out / "featurized.parquet")

    # train_model
    train, test = train_test_split(df, test_size=TEST_SIZE, stratify=df[TARGET], random_state=SEED)
    train.to_parquet(out / "train.parquet")
    test.to_parquet(out / "test.parquet")
    X, y = train.drop(columns=[TARGET]), train[TARGET]
    model = DecisionTreeClassifier(max_depth=MAX_DEPTH, random_state=SEED).fit(X, y)
    X_test, y_test = test.drop(columns=[TARGET]), test[TARGET]
    predicted = model.predict(X_test)
    precision, recall, f1, _ = precision_recall_fscore_support(y_test, predicted, average="macro", zero_division=0)
    metrics = {"accuracy": accuracy_score(y_test, predicted), "f1": f1, "precision": precision, "recall": recall}
    figure = Figure(figsize=(4, 4), layout="constrained")
    ConfusionMatrixDisplay.from_predictions(
        y_test, predicted, labels=model.classes_, ax=figure.subplots(), colorbar=False
    )
    figure.savefig(out / "confusion_matrix.png")
    skops.io.dump(model, out / "model.skops")

    # predict
    champion = skops.io.load(out / "model.skops", trusted=["sklearn.tree._tree.Tree"])
    scored = pd.read_parquet(out / "test.parquet")
    scored = scored.assign(prediction=champion.predict(scored.drop(columns=[TARGET])), model_version=1)
    scored.to_parquet(out / "predictions.parquet")
    print(" ".join(f"{k}={v:.4f}" for k, v in metrics.items()), f"{len(scored)} predictions")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(f"usage: {sys.argv[0]} OUTDIR")
    main(Path(sys.argv[1]))
