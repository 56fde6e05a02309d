"""Batch predictions as a pipeline run's `predict` step stored them, read back by that run's id.

A notebook or another program reads them here rather than by storage key, so it
works the same on a local folder and on S3 and says what to do when a run made none.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from mlops_template.config.load import Config, Environment
from mlops_template.errors import StorageError

if TYPE_CHECKING:
    import pandas as pd

_RUN_ID = re.compile(r"[A-Za-z0-9_-]+")


def predictions_key(run_id: str) -> str:
    """Where a pipeline run's predictions are stored, under the environment's storage root."""
    if not _RUN_ID.fullmatch(run_id):
        raise StorageError(
            f"pipeline run id {run_id!r} is invalid; pass the id `mlops runs` lists (letters, digits, '-', '_')"
        )
    return f"predictions/{run_id}.parquet"


def read_predictions(config: Config, run_id: str, environment: str | Environment | None = None) -> pd.DataFrame:
    """The table of predictions pipeline run `run_id` stored, read from `environment`'s storage.

    Args:
        config: the project's config (`load_config()`).
        run_id: the pipeline (parent) run's id: `PipelineResult.run_id`, or an id `mlops runs` lists.
        environment: a name or an `Environment`; default `MLOPS_ENVIRONMENT`, else the project's default.
    """
    from mlops_template.data.tables import parse_table
    from mlops_template.storage import open_storage

    env = environment if isinstance(environment, Environment) else config.environment(environment)
    storage = open_storage(env)
    key = predictions_key(run_id)
    try:
        data = storage.read_bytes(key)
    except StorageError as exc:
        if not isinstance(exc.__cause__, FileNotFoundError):
            raise
        raise StorageError(
            f"pipeline run '{run_id}' stored no predictions in environment '{env.name}' ({storage.uri(key)}); "
            "pass the id of a run whose predict step finished (`mlops runs`), or run `mlops run --step predict`"
        ) from exc
    return parse_table(data, storage.uri(key))
