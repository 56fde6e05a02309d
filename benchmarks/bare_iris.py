"""The rendered project's pipeline as a bare script: the same pandas/scikit-learn work, no tracking.

The baseline for `pipeline_overhead.py`: what a team would write without
mlops-template. It cleans bundled iris, derives the template's features,
writes the same parquet datasets, splits off held-out rows, trains and
evaluates the same scikit-learn `Pipeline` (imputers, one-hot encoder,
gradient-boosted trees), draws the confusion matrix and saves the model with
skops (the format the template's logged models use). With `--beat-champion`
it loads the previous champion and its training rows, scores both models on
the held-out rows the champion did not train on, and replaces the champion
only when the new model is better, as the gate does. Finally it loads the
champion and writes predictions on its held-out rows.

    python benchmarks/bare_iris.py OUTDIR --champion DIR [--beat-champion]
"""

import argparse
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import skops.io
from matplotlib.figure import Figure
from sklearn.compose import ColumnTransformer
from sklearn.datasets import load_iris
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.impute import SimpleImputer
from sklearn.metrics import ConfusionMatrixDisplay, accuracy_score, precision_recall_fscore_support
from sklearn.model_selection import train_test_split
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder

TARGET, SEED, TEST_SIZE, MAX_DEPTH, MAX_ITER = "species", 42, 0.3, 5, 100


def main(out: Path, champion_dir: Path, beat_champion: bool) -> None:
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
    train, heldout = train_test_split(df, test_size=TEST_SIZE, stratify=df[TARGET], random_state=SEED)
    train.to_parquet(out / "train.parquet")
    heldout.to_parquet(out / "heldout.parquet")
    X, y = train.drop(columns=[TARGET]), train[TARGET]
    numeric = X.select_dtypes("number").columns.tolist()
    categorical = [c for c in X.columns if c not in numeric]
    prepare = ColumnTransformer(
        [
            ("numeric", SimpleImputer(strategy="median"), numeric),
            (
                "categorical",
                OneHotEncoder(handle_unknown="infrequent_if_exist", max_categories=20, sparse_output=False),
                categorical,
            ),
        ]
    )
    estimator = HistGradientBoostingClassifier(max_depth=MAX_DEPTH, max_iter=MAX_ITER, random_state=SEED)
    model = Pipeline([("prepare", prepare), ("model", estimator)]).fit(X, y)
    X_held, y_held = heldout.drop(columns=[TARGET]), heldout[TARGET]
    predicted = model.predict(X_held)
    metrics = macro_metrics(y_held, predicted)
    figure = Figure(figsize=(4, 4), layout="constrained")
    ConfusionMatrixDisplay.from_predictions(
        y_held, predicted, labels=model.classes_, ax=figure.subplots(), colorbar=False
    )
    figure.savefig(out / "evaluation.png")
    data = skops.io.dumps(model)
    trusted = skops.io.get_untrusted_types(data=data)
    (out / "model.skops").write_bytes(data)

    promote = True
    if beat_champion and (champion_dir / "model.skops").exists():
        champion = skops.io.load(champion_dir / "model.skops", trusted=trusted)
        seen = set(row_hashes(pd.read_parquet(champion_dir / "train.parquet")).tolist())
        rows = heldout[[h not in seen for h in row_hashes(heldout).tolist()]]
        X_rows, y_rows = rows.drop(columns=[TARGET]), rows[TARGET]
        mine = macro_metrics(y_rows, model.predict(X_rows))["f1"]
        theirs = macro_metrics(y_rows, champion.predict(X_rows))["f1"]
        promote = mine > theirs
    if promote:
        champion_dir.mkdir(parents=True, exist_ok=True)
        for name in ("model.skops", "train.parquet", "heldout.parquet"):
            shutil.copyfile(out / name, champion_dir / name)

    # predict
    champion = skops.io.load(champion_dir / "model.skops", trusted=trusted)
    scored = pd.read_parquet(champion_dir / "heldout.parquet")
    scored = scored.assign(prediction=champion.predict(scored.drop(columns=[TARGET])), model_version=1)
    scored.to_parquet(out / "predictions.parquet")
    print(" ".join(f"{k}={v:.4f}" for k, v in metrics.items()), f"{len(scored)} predictions, promoted={promote}")


def macro_metrics(y_true, y_pred) -> dict[str, float]:
    precision, recall, f1, _ = precision_recall_fscore_support(y_true, y_pred, average="macro", zero_division=0)
    return {"accuracy": accuracy_score(y_true, y_pred), "f1": f1, "precision": precision, "recall": recall}


def row_hashes(df: pd.DataFrame) -> np.ndarray:
    return pd.util.hash_pandas_object(df, index=False).to_numpy()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("out", type=Path)
    parser.add_argument("--champion", type=Path, required=True, help="where the champion model is kept between runs")
    parser.add_argument("--beat-champion", action="store_true", help="replace the champion only when better")
    args = parser.parse_args()
    main(args.out, args.champion, args.beat_champion)
