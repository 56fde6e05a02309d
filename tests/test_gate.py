"""The approval gate's decisions, and the hash that pins a registered model's files."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlops_template.config import Gate
from mlops_template.registry import directory_sha256, evaluate_gate

F1 = Gate(metric="f1", min=0.8, beat_champion=True)
RMSE = Gate(metric="rmse", min=0.5, beat_champion=True, higher_is_better=False)


@pytest.mark.parametrize("value", [0.8, 0.81, 1.0])
def test_passes_at_or_above_min(value):
    decision = evaluate_gate(F1, {"f1": value, "accuracy": 0.9})
    assert decision.passed
    assert decision.metric == "f1" and decision.value == value
    assert decision.reason == f"f1={value:.4g} ≥ 0.8"


def test_fails_below_min_and_says_by_how_much():
    decision = evaluate_gate(F1, {"f1": 0.79})
    assert not decision.passed
    assert decision.reason == "f1=0.79 does not reach ≥ 0.8"


def test_equal_to_champion_does_not_beat_it():
    decision = evaluate_gate(F1, {"f1": 0.9}, champion_value=0.9, champion_version="3")
    assert not decision.passed
    assert "does not beat champion v3 (0.9)" in decision.reason
    assert decision.champion_version == "3" and decision.champion_value == 0.9


def test_worse_than_champion_fails():
    decision = evaluate_gate(F1, {"f1": 0.85}, champion_value=0.9, champion_version="3")
    assert not decision.passed
    assert "does not beat champion v3" in decision.reason


def test_better_than_champion_passes():
    decision = evaluate_gate(F1, {"f1": 0.95}, champion_value=0.9, champion_version="3")
    assert decision.passed
    assert decision.reason == "f1=0.95 ≥ 0.8 and beats champion v3 (0.9)"


def test_no_champion_yet_passes():
    decision = evaluate_gate(F1, {"f1": 0.85})
    assert decision.passed
    assert decision.champion_version is None and "champion" not in decision.reason


def test_champion_without_the_metric_passes_and_says_so():
    decision = evaluate_gate(F1, {"f1": 0.85}, champion_value=None, champion_version="2")
    assert decision.passed
    assert decision.reason == "f1=0.85 ≥ 0.8; champion v2 has no f1"


def test_champion_with_nan_metric_counts_as_having_none():
    # Otherwise nothing could ever beat it: every comparison with NaN is false.
    decision = evaluate_gate(F1, {"f1": 0.85}, champion_value=float("nan"), champion_version="2")
    assert decision.passed
    assert "champion v2 has no f1" in decision.reason


def test_beat_champion_false_ignores_a_better_champion():
    gate = Gate(metric="f1", min=0.8, beat_champion=False)
    decision = evaluate_gate(gate, {"f1": 0.85}, champion_value=0.99, champion_version="7")
    assert decision.passed
    assert decision.reason == "f1=0.85 ≥ 0.8"


def test_beat_champion_false_still_applies_min():
    gate = Gate(metric="f1", min=0.8, beat_champion=False)
    assert not evaluate_gate(gate, {"f1": 0.5}, champion_value=0.1, champion_version="7").passed


@pytest.mark.parametrize(
    ("rmse", "champion", "passed", "reason"),
    [
        (0.5, None, True, "rmse=0.5 ≤ 0.5"),
        (0.3, None, True, "rmse=0.3 ≤ 0.5"),
        (0.6, None, False, "rmse=0.6 does not reach ≤ 0.5"),
        (0.3, 0.4, True, "rmse=0.3 ≤ 0.5 and beats champion v1 (0.4)"),
        (0.4, 0.4, False, "rmse=0.4 does not beat champion v1 (0.4)"),
        (0.45, 0.4, False, "rmse=0.45 does not beat champion v1 (0.4)"),
    ],
)
def test_lower_is_better_inverts_both_comparisons(rmse, champion, passed, reason):
    decision = evaluate_gate(
        RMSE, {"rmse": rmse}, champion_value=champion, champion_version="1" if champion is not None else None
    )
    assert decision.passed is passed
    assert decision.reason == reason


def test_metric_not_logged_fails_listing_what_was_logged():
    decision = evaluate_gate(F1, {"recall": 0.9, "accuracy": 0.95})
    assert not decision.passed
    assert decision.value is None
    assert decision.reason == "metric 'f1' was not logged; logged: accuracy, recall"


def test_no_metrics_at_all_fails_clearly():
    decision = evaluate_gate(F1, {})
    assert not decision.passed
    assert decision.reason == "metric 'f1' was not logged; logged: (none)"


@pytest.mark.parametrize("gate", [F1, RMSE], ids=["higher", "lower"])
def test_nan_metric_fails(gate):
    decision = evaluate_gate(gate, {gate.metric: float("nan")})
    assert not decision.passed
    assert decision.reason.startswith(f"{gate.metric} is NaN")


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
    assert len(digest) == 64 and int(digest, 16) >= 0
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
