"""Errors a user can cause, each with a message that names the thing, the problem and the fix.

The CLI prints an :class:`MlopsError` as one line and exits non-zero; anything
else is a bug and keeps its traceback.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class MlopsError(Exception):
    """Base class of every error the user can fix."""


class ConfigError(MlopsError):
    """`mlops.toml` is missing, malformed, or names something unknown."""


class ProjectError(MlopsError):
    """The project cannot be found, rendered or imported."""


class StepError(MlopsError):
    """A step is unknown, badly defined, or failed while running."""


class StorageError(MlopsError):
    """A dataset or file cannot be read from or written to storage."""


class TrackingError(MlopsError):
    """The MLflow tracking store or model registry cannot be reached or used."""


class DataError(MlopsError):
    """A table does not fit what a step needs of it: no rows, no usable target column."""


class ModelError(MlopsError):
    """A model cannot be logged, scored or loaded the way it was asked to be."""


class NoChampionError(MlopsError):
    """No registered model version carries the `champion` alias yet."""


class RunError(MlopsError):
    """A run named on the command line is unknown, ambiguous, another project's, or cannot be reproduced."""


class IntegrityError(MlopsError):
    """Stored bytes no longer match the hash recorded for them."""


def choices(valid: Iterable[str], given: str | None = None) -> str:
    """Format the valid choices, with a "did you mean" hint for a near miss."""
    valid = sorted(valid)
    text = ", ".join(valid) if valid else "(none)"
    if given is not None:
        close = difflib.get_close_matches(given, valid, n=1)
        if close:
            return f"did you mean '{close[0]}'? Valid: {text}"
    return f"valid: {text}"
