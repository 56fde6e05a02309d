"""Pinned pip requirements for a logged model, without MLflow's slow inference (~10 s a model)."""

from __future__ import annotations

from importlib import metadata
from typing import Any

# Import name of a model's top module -> distribution to pin.
_DISTRIBUTIONS = {"sklearn": "scikit-learn", "xgboost": "xgboost", "lightgbm": "lightgbm", "catboost": "catboost"}
_ALWAYS = ("mlflow", "pandas", "numpy", "scipy", "skops", "cloudpickle")


def model_requirements(model: Any) -> list[str]:
    """`name==version` for the model's library and what MLflow needs to load it."""
    top = type(model).__module__.split(".", 1)[0]
    names = [_DISTRIBUTIONS.get(top, top), *_ALWAYS]
    pins = []
    for name in dict.fromkeys(names):
        try:
            pins.append(f"{name}=={metadata.version(name)}")
        except metadata.PackageNotFoundError:
            continue
    return pins
