"""The approval gate: may a candidate model become the champion?

The candidate must reach `min` on its held-out rows, and (with
`beat_champion`) score strictly better than the champion on the same rows,
rows that neither model trained on: the candidate's held-out split less every
row found in the champion's recorded training data. Both scores use the same
metric, computed here, so the comparison is like with like. Better follows
the metric's direction (`config.metrics`): for an error such as `rmse`,
lower is better and `min` is a ceiling the score must not exceed. The gate
fails closed: a champion that cannot be loaded or scored, or whose training
data cannot be read, refuses the candidate, unless the project sets
`on_champion_error = "min"` to let `min` decide then.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mlops_template.config.load import Gate
from mlops_template.config.metrics import better, higher_is_better

if TYPE_CHECKING:
    from collections.abc import Callable

    import numpy as np
    import pandas as pd
    from mlflow.entities.model_registry import ModelVersion

    from mlops_template.models.registry import Champion


@dataclass(frozen=True)
class Comparison:
    """The candidate and the champion scored on the same rows, or why the champion could not be."""

    champion_version: str
    rows: int
    candidate: float | None = None
    champion: float | None = None
    unscorable: str | None = None  # why the champion could not score the rows: only `min` applies


@dataclass(frozen=True)
class Decision:
    """What the gate decided about a candidate model, and why."""

    passed: bool
    reason: str
    metric: str
    value: float | None
    rows: int = 0
    champion_version: str | None = None
    champion_value: float | None = None
    candidate_value: float | None = None  # the candidate on the rows shared with the champion


def evaluate_gate(gate: Gate, value: float | None, *, rows: int, comparison: Comparison | None = None) -> Decision:
    """Apply `gate` to a candidate scoring `value` on its `rows` held-out rows.

    `comparison` is the candidate against the current champion on the rows
    neither trained on; None when there is no champion (or `beat_champion` is off).
    """
    metric = gate.metric
    common = dict(metric=metric, value=value, rows=rows)
    if comparison is not None:
        common.update(
            champion_version=comparison.champion_version,
            champion_value=comparison.champion,
            candidate_value=comparison.candidate,
        )
    on = f"on {rows} held-out rows"
    if value is None or math.isnan(value):
        return Decision(False, f"{metric} is NaN {on}; check the model's predictions", **common)
    up = higher_is_better(metric)
    if gate.min is not None and up and not value >= gate.min:
        return Decision(False, f"{metric}={value:.4g} {on} does not reach ≥ {gate.min:g}", **common)
    if gate.min is not None and not up and not value <= gate.min:
        return Decision(
            False,
            f"{metric}={value:.4g} {on} exceeds the ceiling ≤ {gate.min:g} (for {metric}, lower is better: "
            "min is the most it may reach)",
            **common,
        )
    reason = (
        f"{metric}={value:.4g}" + (f" {'≥' if up else '≤'} {gate.min:g}" if gate.min is not None else "") + f" {on}"
    )
    if comparison is None or not gate.beat_champion:
        return Decision(True, reason, **common)
    version = f"champion v{comparison.champion_version}"
    if comparison.unscorable and gate.on_champion_error == "min":
        return Decision(
            True,
            f"{reason}; {version} cannot score them ({comparison.unscorable}), so only min applies "
            '(on_champion_error = "min")',
            **common,
        )
    if comparison.unscorable:
        return Decision(
            False,
            f"{reason}, but {version} cannot score them ({comparison.unscorable}), so the two cannot be compared "
            'and the candidate is refused; fix the champion, or set on_champion_error = "min" in [model] gate '
            "to let min decide",
            **common,
        )
    if comparison.rows == 0:
        return Decision(
            False,
            f"{reason}, but none is free of {version}'s training data, so the two cannot be compared; "
            "hold out other rows (test_size, seed) or promote by hand with `mlops promote`",
            **common,
        )
    mine, theirs = comparison.candidate, comparison.champion
    same = f"on the {comparison.rows} held-out rows neither model trained on"
    if theirs is None or math.isnan(theirs):
        return Decision(True, f"{reason}; {version} scores NaN {same}", **common)
    if mine is None or math.isnan(mine) or not better(mine, theirs, metric):
        return Decision(False, f"{metric}={_num(mine)} does not beat {version} ({theirs:.4g}) {same}", **common)
    return Decision(True, f"{reason}; beats {version} {same}: {mine:.4g} {'>' if up else '<'} {theirs:.4g}", **common)


def decide(
    gate: Gate,
    value: float | None,
    rows: pd.DataFrame,
    target: str,
    *,
    current: ModelVersion | None,
    load: Callable[[ModelVersion], Champion],
    candidate: Any,
    candidate_features: list[str] | None,
    read: Callable[[str], pd.DataFrame],
    task: str,
) -> Decision:
    """`gate` on a candidate scoring `value` on `rows`; with `beat_champion`, against `current` (`load`ed) as well."""
    comparison = None
    if current is not None and gate.beat_champion:
        try:
            champion = load(current)
        except Exception as exc:  # noqa: BLE001 - whatever stops the champion loading stops the comparison
            comparison = Comparison(current.version, len(rows), unscorable=f"it cannot be loaded: {exc}")
            return evaluate_gate(gate, value, rows=len(rows), comparison=comparison)
        comparison = compare_with_champion(
            champion,
            rows,
            target,
            candidate=candidate,
            candidate_features=candidate_features,
            read=read,
            metric=gate.metric,
            task=task,
        )
    return evaluate_gate(gate, value, rows=len(rows), comparison=comparison)


def compare_with_champion(
    champion: Champion,
    rows: pd.DataFrame,
    target: str,
    *,
    candidate: Any,
    candidate_features: list[str] | None,
    read: Callable[[str], pd.DataFrame],
    metric: str,
    task: str | None,
) -> Comparison:
    """The candidate and the champion scored with the gate metric on the rows of `rows` neither trained on.

    `read` gives the rows of a snapshot reference (`name:id`) of the
    champion's recorded training data; an unreadable one, or a champion that
    cannot score the rows, leaves the comparison unscorable with the reason.
    """
    from mlops_template.errors import MlopsError
    from mlops_template.models.scoring import score

    for ref in champion.training_data:
        try:
            seen = read(ref)
        except MlopsError as exc:
            return Comparison(champion.version, len(rows), unscorable=f"its training data {ref} is unreadable: {exc}")
        rows = unseen_rows(rows, seen)
    if rows.empty:
        return Comparison(champion.version, 0)
    X, y = rows.drop(columns=[target]), rows[target]
    try:
        theirs = score(champion.model, champion.features(X), y, metric, task=task)
    except KeyError as exc:
        return Comparison(champion.version, len(rows), unscorable=f"it needs column(s) these rows lack: {exc}")
    except Exception as exc:  # noqa: BLE001 - a foreign model may raise anything; the reason is reported
        return Comparison(champion.version, len(rows), unscorable=f"{type(exc).__name__}: {exc}")
    mine = score(candidate, X[candidate_features] if candidate_features else X, y, metric, task=task)
    return Comparison(champion.version, len(rows), mine, theirs)


def unseen_rows(heldout: pd.DataFrame, training: pd.DataFrame) -> pd.DataFrame:
    """The rows of `heldout` not found in `training`, matched by a hash of the columns both share."""
    shared = [c for c in heldout.columns if c in set(training.columns)]
    if not shared:
        return heldout
    seen = set(row_hashes(training, shared).tolist())
    keep = [h not in seen for h in row_hashes(heldout, shared).tolist()]
    return heldout[keep]


def row_hashes(df: pd.DataFrame, columns: list[str]) -> np.ndarray:
    """One 64-bit hash per row over `columns`; numbers compare as floats, everything else as text."""
    import pandas as pd

    frame = pd.DataFrame(
        {
            str(c): df[c].astype("float64")
            if pd.api.types.is_numeric_dtype(df[c]) or pd.api.types.is_bool_dtype(df[c])
            else df[c].astype("string")
            for c in columns
        }
    )
    return pd.util.hash_pandas_object(frame, index=False).to_numpy()


def _num(value: float | None) -> str:
    return "NaN" if value is None else f"{value:.4g}"
