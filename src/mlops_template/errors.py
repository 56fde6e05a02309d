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


class VcsError(MlopsError):
    """git is missing, the folder is not in a repository, a git command failed or hung, or a ref is not a commit SHA.

    `reason` is git's own first line (empty when git said nothing), `missing`
    whether git is not installed, `returncode` git's exit status when it ran
    to the end.
    """

    def __init__(self, message: str, *, reason: str = "", missing: bool = False, returncode: int | None = None):
        super().__init__(message)
        self.reason = reason
        self.missing = missing
        self.returncode = returncode


def choices(valid: Iterable[str], given: str | None = None) -> str:
    """Format the valid choices, with a "did you mean" hint for a near miss."""
    valid = sorted(valid)
    text = ", ".join(valid) if valid else "(none)"
    if given is not None:
        close = difflib.get_close_matches(given, valid, n=1)
        if close:
            return f"did you mean '{close[0]}'? Valid: {text}"
    return f"valid: {text}"
