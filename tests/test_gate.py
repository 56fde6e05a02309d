"""The approval gate's decisions, the rows it compares on, and the hash that pins a registered model's files."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mlops_template.config.load import Gate
from mlops_template.config.metrics import better, higher_is_better, metric_problem, metric_task
from mlops_template.models.gate import Comparison, evaluate_gate, unseen_rows
from mlops_template.models.model_files import sha256 as directory_sha256
from mlops_template.models.scoring import check_scorer, score

F1 = Gate(metric="f1", min=0.8, beat_champion=True)


@pytest.mark.parametrize("value", [0.8, 0.81, 1.0])
def test_passes_at_or_above_min(value):
    decision = evaluate_gate(F1, value, rows=45)
    assert decision.passed
    assert (decision.metric, decision.value, decision.rows) == ("f1", value, 45)
    assert decision.reason == f"f1={value:.4g} ≥ 0.8 on 45 held-out rows"


def test_fails_below_min_and_says_on_how_many_rows():
    decision = evaluate_gate(F1, 0.79, rows=45)
    assert not decision.passed
    assert decision.reason == "f1=0.79 on 45 held-out rows does not reach ≥ 0.8"


def test_min_is_optional():
    decision = evaluate_gate(Gate(metric="r2"), 0.1, rows=10)
    assert decision.passed and decision.reason == "r2=0.1 on 10 held-out rows"


def test_equal_to_champion_on_the_same_rows_does_not_beat_it():
    decision = evaluate_gate(F1, 0.9, rows=45, comparison=Comparison("3", rows=14, candidate=0.9, champion=0.9))
    assert not decision.passed
    assert decision.reason == "f1=0.9 does not beat champion v3 (0.9) on the 14 held-out rows neither model trained on"
    assert (decision.champion_version, decision.champion_value, decision.candidate_value) == ("3", 0.9, 0.9)


def test_better_on_its_own_split_but_worse_on_the_shared_rows_fails_with_both_numbers():
    decision = evaluate_gate(F1, 0.97, rows=45, comparison=Comparison("3", rows=14, candidate=0.85, champion=0.93))
    assert not decision.passed
    assert (
        "f1=0.85 does not beat champion v3 (0.93) on the 14 held-out rows neither model trained on" in decision.reason
    )


def test_better_on_the_shared_rows_passes_and_shows_both_numbers():
    decision = evaluate_gate(F1, 0.9, rows=45, comparison=Comparison("3", rows=14, candidate=0.95, champion=0.9))
    assert decision.passed
    assert decision.reason == (
        "f1=0.9 ≥ 0.8 on 45 held-out rows; beats champion v3 on the 14 held-out rows neither model trained on: 0.95 > 0.9"
    )


def test_min_still_applies_before_the_comparison():
    decision = evaluate_gate(F1, 0.5, rows=45, comparison=Comparison("3", rows=14, candidate=0.99, champion=0.1))
    assert not decision.passed and "does not reach ≥ 0.8" in decision.reason


def test_a_champion_that_cannot_score_the_rows_refuses_the_candidate_with_the_reason():
    comparison = Comparison("2", rows=45, unscorable="it needs column(s) these rows lack: 'petal_area'")
    decision = evaluate_gate(F1, 0.85, rows=45, comparison=comparison)
    assert not decision.passed
    assert decision.reason == (
        "f1=0.85 ≥ 0.8 on 45 held-out rows, but champion v2 cannot score them (it needs column(s) these rows lack: "
        "'petal_area'), so the two cannot be compared and the candidate is refused; fix the champion, or set "
        'on_champion_error = "min" in [model] gate to let min decide'
    )


def test_on_champion_error_min_lets_min_decide_when_the_champion_cannot_score():
    comparison = Comparison("2", rows=45, unscorable="ValueError: broken")
    lenient = Gate(metric="f1", min=0.8, on_champion_error="min")
    decision = evaluate_gate(lenient, 0.85, rows=45, comparison=comparison)
    assert decision.passed
    assert decision.reason.endswith(
        'champion v2 cannot score them (ValueError: broken), so only min applies (on_champion_error = "min")'
    )
    assert not evaluate_gate(lenient, 0.7, rows=45, comparison=comparison).passed


def test_no_row_free_of_the_champions_training_data_fails():
    decision = evaluate_gate(F1, 0.95, rows=45, comparison=Comparison("4", rows=0))
    assert not decision.passed
    assert "none is free of champion v4's training data" in decision.reason


def test_champion_scoring_nan_does_not_block_every_candidate():
    decision = evaluate_gate(
        F1, 0.85, rows=45, comparison=Comparison("2", rows=9, candidate=0.8, champion=float("nan"))
    )
    assert decision.passed and "champion v2 scores NaN" in decision.reason


def test_beat_champion_false_ignores_a_better_champion():
    gate = Gate(metric="f1", min=0.8, beat_champion=False)
    decision = evaluate_gate(gate, 0.85, rows=45, comparison=Comparison("7", rows=45, candidate=0.85, champion=0.99))
    assert decision.passed and decision.reason == "f1=0.85 ≥ 0.8 on 45 held-out rows"


@pytest.mark.parametrize("value", [float("nan"), None])
def test_nan_metric_fails(value):
    decision = evaluate_gate(F1, value, rows=45)
    assert not decision.passed and decision.reason.startswith("f1 is NaN on 45 held-out rows")


# -- lower-is-better metrics -------------------------------------------------------------------

RMSE = Gate(metric="rmse", min=0.5, beat_champion=True)


@pytest.mark.parametrize(
    ("metric", "higher"),
    [
        ("rmse", False),
        ("mae", False),
        ("mse", False),
        ("val_rmse", False),
        ("log_loss", False),
        ("train_loss", False),
        ("neg_root_mean_squared_error", True),
        ("neg_log_loss", True),
        ("f1", True),
        ("r2", True),
        ("accuracy", True),
    ],
)
def test_the_name_gives_the_direction(metric, higher):
    assert higher_is_better(metric) is higher
    assert better(2.0, 1.0, metric) is higher and better(1.0, 2.0, metric) is not higher
    assert not better(1.0, 1.0, metric)


@pytest.mark.parametrize("value", [0.1, 0.5])
def test_an_error_passes_at_or_below_its_ceiling(value):
    decision = evaluate_gate(RMSE, value, rows=45)
    assert decision.passed and decision.reason == f"rmse={value:g} ≤ 0.5 on 45 held-out rows"


def test_an_error_above_its_ceiling_fails_naming_the_ceiling():
    decision = evaluate_gate(RMSE, 0.51, rows=45)
    assert not decision.passed
    assert decision.reason.startswith("rmse=0.51 on 45 held-out rows exceeds the ceiling ≤ 0.5 (for rmse, lower is")


def test_a_lower_error_than_the_champion_beats_it_and_a_higher_one_does_not():
    lower = evaluate_gate(RMSE, 0.3, rows=45, comparison=Comparison("3", rows=14, candidate=0.2, champion=0.4))
    assert lower.passed
    assert lower.reason.endswith("beats champion v3 on the 14 held-out rows neither model trained on: 0.2 < 0.4")
    higher = evaluate_gate(RMSE, 0.3, rows=45, comparison=Comparison("3", rows=14, candidate=0.4, champion=0.2))
    assert not higher.passed
    assert higher.reason.startswith("rmse=0.4 does not beat champion v3 (0.2)")


def test_errors_are_regression_gate_metrics_scored_on_the_predictions():
    from sklearn.linear_model import LinearRegression
    from sklearn.metrics import mean_absolute_error, mean_squared_error

    for metric in ("rmse", "mae", "mse"):
        assert metric_task(metric) == "regression" and metric_problem(metric, "regression") is None
        check_scorer(metric)  # accepted, though not a scikit-learn scorer name
    assert metric_problem("rmse", "classification") == (
        '\'rmse\' is a regression metric but task = "classification"; use e.g. "f1"'
    )
    rng = np.random.default_rng(0)
    X = pd.DataFrame({"a": rng.normal(size=100)})
    y = 3 * X["a"] + rng.normal(size=100)
    model = LinearRegression().fit(X, y)
    predicted = model.predict(X)
    assert score(model, X, y, "mse", task="regression") == pytest.approx(mean_squared_error(y, predicted))
    assert score(model, X, y, "rmse", task="regression") == pytest.approx(mean_squared_error(y, predicted) ** 0.5)
    assert score(model, X, y, "mae", task="regression") == pytest.approx(mean_absolute_error(y, predicted))
    assert score(model, X, y, "rmse", task="regression") == pytest.approx(
        -score(model, X, y, "neg_root_mean_squared_error", task="regression")
    )


def test_an_unknown_error_name_points_at_the_errors_and_the_negated_scorers():
    with pytest.raises(ValueError, match=r"errors: rmse, mae, mse, lower is better; .*neg_root_mean_squared_error"):
        check_scorer("root_mean_squared_error")


# -- the rows neither model trained on ---------------------------------------------------------


def test_unseen_rows_drops_every_row_found_in_the_training_data():
    heldout = pd.DataFrame({"x": [1, 2, 3, 4], "c": ["a", "b", "c", "d"], "y": [0, 1, 0, 1]})
    training = pd.DataFrame({"x": [2.0, 4.0, 9.0], "c": ["b", "x", "z"], "y": [1, 1, 0]})
    # (2, b, 1) was trained on; (4, d, 1) differs from (4, x, 1) in one column, so it stays.
    assert unseen_rows(heldout, training)["x"].tolist() == [1, 3, 4]


def test_unseen_rows_compares_only_the_columns_both_tables_have():
    heldout = pd.DataFrame({"x": [1, 2], "new_feature": [5, 6], "y": [0, 1]})
    training = pd.DataFrame({"x": [1], "y": [0]})
    assert unseen_rows(heldout, training)["x"].tolist() == [2]


def test_unseen_rows_matches_missing_values_and_ints_against_floats():
    heldout = pd.DataFrame({"x": [1, np.nan], "c": [None, "b"]})
    training = pd.DataFrame({"x": [1.0], "c": [None]})
    assert unseen_rows(heldout, training)["c"].tolist() == ["b"]


# -- metric names ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("metric", "task"),
    [
        ("f1", "classification"),
        ("roc_auc", "classification"),
        ("neg_log_loss", "classification"),
        ("r2", "regression"),
        ("neg_root_mean_squared_error", "regression"),
        ("neg_mean_absolute_error", "regression"),
        ("adjusted_rand_score", None),
    ],
)
def test_metric_task_knows_scikit_learns_scorers(metric, task):
    assert metric_task(metric) == task


def test_metric_problem_names_the_task_and_a_fitting_metric():
    assert metric_problem("roc_auc", "classification") is None
    assert metric_problem("r2", "classification") == (
        '\'r2\' is a regression metric but task = "classification"; use e.g. "f1"'
    )


def test_macro_names_and_scorers_score_the_same_model():
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    X = pd.DataFrame({"a": rng.normal(size=300), "b": rng.normal(size=300)})
    y = np.where(X["a"] + 0.5 * rng.normal(size=300) > 0, "yes", "no")
    model = LogisticRegression().fit(X, y)
    from sklearn.metrics import f1_score, precision_score, roc_auc_score

    predicted = model.predict(X)
    assert score(model, X, y, "f1", task="classification") == pytest.approx(f1_score(y, predicted, average="macro"))
    assert score(model, X, y, "precision", task="classification") == pytest.approx(
        precision_score(y, predicted, average="macro")
    )
    assert score(model, X, y, "roc_auc", task="classification") == pytest.approx(
        roc_auc_score(y == "yes", model.predict_proba(X)[:, 1])
    )


def test_a_predict_only_model_is_scored_through_predict_based_scorers():
    class Rule:  # not a scikit-learn estimator: a pyfunc, say
        def predict(self, X):
            return np.where(X["a"] > 0, "yes", "no")

    X = pd.DataFrame({"a": [-1.0, 1.0, 2.0, -2.0]})
    y = np.array(["no", "yes", "no", "no"])
    assert score(Rule(), X, y, "accuracy", task="classification") == 0.75
    with pytest.raises(AttributeError):
        score(Rule(), X, y, "roc_auc", task="classification")  # needs probabilities


# -- directory_sha256 ------------------------------------------------------------------------


def _model_dir(root: Path) -> Path:
    (root / "sub").mkdir(parents=True)
    (root / "MLmodel").write_text("flavors: {}\n")
    (root / "model.pkl").write_bytes(bytes(range(256)))
    (root / "sub" / "requirements.txt").write_text("scikit-learn==1.5\n")
    return root


def test_sha256_is_stable_for_the_same_content(tmp_path):
    a = _model_dir(tmp_path / "a")
    b = _model_dir(tmp_path / "b")
    digest = directory_sha256(a)
    assert re.fullmatch(r"[0-9a-f]{64}", digest)
    assert directory_sha256(a) == digest
    assert directory_sha256(b) == digest  # where the folder is does not matter
    assert directory_sha256(str(a)) == digest


def test_sha256_changes_when_one_byte_changes(tmp_path):
    folder = _model_dir(tmp_path / "m")
    before = directory_sha256(folder)
    data = bytearray((folder / "model.pkl").read_bytes())
    data[100] ^= 0x01
    (folder / "model.pkl").write_bytes(bytes(data))
    assert directory_sha256(folder) != before


def test_sha256_changes_when_a_file_is_renamed_or_moved(tmp_path):
    folder = _model_dir(tmp_path / "m")
    before = directory_sha256(folder)
    (folder / "model.pkl").rename(folder / "model2.pkl")
    renamed = directory_sha256(folder)
    assert renamed != before
    (folder / "model2.pkl").rename(folder / "sub" / "model2.pkl")
    assert directory_sha256(folder) not in (before, renamed)


def test_sha256_changes_when_a_file_is_added(tmp_path):
    folder = _model_dir(tmp_path / "m")
    before = directory_sha256(folder)
    (folder / "extra.json").write_text("{}")
    assert directory_sha256(folder) != before


def test_sha256_ignores_mlflows_registered_model_meta(tmp_path):
    folder = _model_dir(tmp_path / "m")
    before = directory_sha256(folder)
    (folder / "registered_model_meta").write_text("model_name: x\nmodel_version: 1\n")
    assert directory_sha256(folder) == before


def test_metrics_on_text_labels_are_scikit_learns_to_the_bit():
    from sklearn.metrics import accuracy_score, precision_recall_fscore_support

    from mlops_template.models.scoring import reported_metrics

    rng = np.random.default_rng(7)
    labels = np.array(["churn", "stay", "Upgrade", "ärger", "b", "a b", "zz"])  # case, accents and spaces sort apart
    y_true = pd.Series(rng.choice(labels[:6], 5000, p=[0.4, 0.3, 0.1, 0.1, 0.05, 0.05]), dtype="str")
    y_pred = rng.choice(labels[1:], 5000).astype(object)  # "churn" never predicted, "zz" never true
    precision, recall, f1, _ = precision_recall_fscore_support(
        y_true.to_numpy(dtype=object), y_pred, average="macro", zero_division=0
    )
    expected = {"accuracy": accuracy_score(y_true.to_numpy(dtype=object), y_pred), "f1": f1}
    expected |= {"precision": precision, "recall": recall}
    assert reported_metrics("classification", y_true, y_pred) == expected

    class Fixed:
        def predict(self, X):
            return y_pred

    assert score(Fixed(), pd.DataFrame({"x": range(5000)}), y_true, "f1", task="classification") == f1


def test_text_labels_against_numeric_predictions_are_refused_as_scikit_learn_refuses_them():
    from mlops_template.models.scoring import reported_metrics

    with pytest.raises(ValueError, match="[Mm]ix"):
        reported_metrics("classification", pd.Series(["a", "b", "a"]), np.array([0, 1, 0]))
