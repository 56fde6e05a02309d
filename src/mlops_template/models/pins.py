"""Pinned pip requirements for a logged model, without MLflow's slow inference (~10 s a model)."""

from __future__ import annotations

from importlib import metadata
from typing import Any

# Import name of a model's top module -> the distributions that may provide it, first found wins.
_DISTRIBUTIONS = {
    "sklearn": ("scikit-learn",),
    "xgboost": ("xgboost", "xgboost-cpu"),
    "lightgbm": ("lightgbm",),
    "catboost": ("catboost",),
}
_ALWAYS = ("mlflow", "pandas", "numpy", "scipy", "scikit-learn", "cloudpickle")


def model_requirements(model: Any) -> list[str]:
    """`name==version` for the model's library and what MLflow needs to load it."""
    top = type(model).__module__.split(".", 1)[0]
    candidates = [_DISTRIBUTIONS.get(top, (top,)), *((name,) for name in _ALWAYS)]
    if top == "sklearn":
        candidates.append(("skops",))
    pins: dict[str, str] = {}
    for names in candidates:
        for name in names:
            try:
                pins.setdefault(name, f"{name}=={metadata.version(name)}")
                break
            except metadata.PackageNotFoundError:
                continue
    return list(pins.values())
