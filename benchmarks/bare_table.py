"""The rendered project's pipeline on a team's own table, as a bare script: the same work, no tracking.

The baseline for `scale.py`: what a team would write without mlops-template
for the template's steps on a CSV table of its own. It reads the table with
pandas, drops duplicate and unlabelled rows, writes the processed and
featurized parquet files (the template's `feat_data` finds no iris or date
columns in such a table and passes it through), takes the rows to train on
(past `MAX_TRAIN_ROWS`, a seeded sample stratified by class, as the
template's `max_train_rows` does), splits off held-out rows (stratified),
writes both, trains and evaluates the same scikit-learn `Pipeline`
(imputers, one-hot encoder, gradient-boosted trees), draws the confusion
matrix, saves the model with skops, loads it back and writes predictions on
the held-out rows.

    python benchmarks/bare_table.py TABLE.csv OUTDIR --target COLUMN
"""

import argparse
from pathlib import Path

import pandas as pd
import skops.io
from matplotlib.figure import Figure
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.impute import SimpleImputer
from sklearn.metrics import ConfusionMatrixDisplay, accuracy_score, precision_recall_fscore_support
from sklearn.model_selection import train_test_split
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder

SEED, TEST_SIZE, MAX_DEPTH, MAX_ITER, MAX_TRAIN_ROWS = 42, 0.3, 5, 100, 1_000_000


def main(table: Path, out: Path, target: str) -> None:
    out.mkdir(parents=True, exist_ok=True)

    # make_data
    df = pd.read_csv(table)
    df = df.drop_duplicates().dropna(subset=[target]).reset_index(drop=True)
    df.to_parquet(out / "processed.parquet")

    # feat_data: nothing to derive from these columns
    df.to_parquet(out / "featurized.parquet")

    # train_model: past MAX_TRAIN_ROWS, a seeded sample with each class in its share
    rows = df
    if len(df) > MAX_TRAIN_ROWS:
        rows = df.groupby(target, group_keys=False).sample(frac=MAX_TRAIN_ROWS / len(df), random_state=SEED)
    train, heldout = train_test_split(rows, test_size=TEST_SIZE, stratify=rows[target], random_state=SEED)
    train, heldout = train.reset_index(drop=True), heldout.reset_index(drop=True)
    train.to_parquet(out / "train.parquet")
    heldout.to_parquet(out / "heldout.parquet")
    X, y = train.drop(columns=[target]), train[target]
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
    X_held, y_held = heldout.drop(columns=[target]), heldout[target]
    predicted = model.predict(X_held)
    precision, recall, f1, _ = precision_recall_fscore_support(y_held, predicted, average="macro", zero_division=0)
    metrics = {"accuracy": accuracy_score(y_held, predicted), "f1": f1, "precision": precision, "recall": recall}
    figure = Figure(figsize=(4, 4), layout="constrained")
    ConfusionMatrixDisplay.from_predictions(
        y_held, predicted, labels=model.classes_, ax=figure.subplots(), colorbar=False
    )
    figure.savefig(out / "evaluation.png")
    data = skops.io.dumps(model)
    trusted = skops.io.get_untrusted_types(data=data)
    (out / "model.skops").write_bytes(data)

    # predict: the saved model on the held-out rows
    model = skops.io.load(out / "model.skops", trusted=trusted)
    scored = pd.read_parquet(out / "heldout.parquet")
    scored = scored.assign(prediction=model.predict(scored.drop(columns=[target])), model_version=1)
    scored.to_parquet(out / "predictions.parquet")
    print(" ".join(f"{k}={v:.4f}" for k, v in metrics.items()), f"{len(df)} rows, {len(scored)} predictions")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("table", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--target", required=True)
    args = parser.parse_args()
    main(args.table, args.out, args.target)
