"""Every MLflow tag name the library reads or writes, in one place.

Runs, logged models and registered versions are found and explained by these
tags (`mlops show`, `mlops models`, `mlops reproduce`), so a name is defined
once and imported wherever it is used.
"""

from __future__ import annotations

# Parent (pipeline) runs
TAG_PIPELINE = "mlops.pipeline"
TAG_PIPELINE_RUN = "mlops.pipeline_run"
TAG_ENVIRONMENT = "mlops.environment"
TAG_STEPS = "mlops.steps"
TAG_GIT_COMMIT = "mlops.git_commit"
TAG_GIT_DIRTY = "mlops.git_dirty"
TAG_GIT_DIFF = "mlops.git_diff"  # bytes of mlops/code.diff, "none" when clean, "not recorded" when withheld
TAG_GIT_DIFF_SHA256 = "mlops.git_diff_sha256"  # of mlops/code.diff: reproduce applies only those bytes
TAG_PACKAGES = "mlops.packages"
TAG_PYTHON = "mlops.python"
TAG_PLATFORM = "mlops.platform"
TAG_REPRODUCES = "mlops.reproduces"
# Under `mlflow run`: MLflow's own run names the pipeline run it started, and back.
TAG_PIPELINE_RUN_ID = "mlops.pipeline_run_id"
TAG_LAUNCHED_BY = "mlops.launched_by"

# Step runs
TAG_STEP = "mlops.step"
TAG_OUTPUT_PREFIX = "mlops.output."
TAG_SQL_PREFIX = "mlops.sql."  # + dataset name: JSON of the query that made it (file, sha256, connection, params)
TAG_OUTPUT_URI_PREFIX = "mlops.output_uri."  # + name: where this run wrote it (MLflow keeps one source per digest)
TAG_HEARTBEAT = "mlops.heartbeat"
TAG_CACHE_KEY = "mlops.cache_key"  # the step's code, params, settings and packages (pipeline.cache)
TAG_CACHE_READS = "mlops.cache_reads"  # JSON of what the attempt read: datasets, raw files, queries, champion
TAG_CACHED_FROM = "mlops.cached_from"  # the attempt whose outputs this step reused instead of running
TAG_LOST = "mlops.lost"
TAG_GATE = "mlops.gate"
TAG_GATE_REASON = "mlops.gate_reason"
TAG_GATE_DATA = "mlops.gate_data"  # the rows the target's gate scored, `name:id`
TAG_MODEL_VERSION = (
    "mlops.model_version"  # Under `mlflow run`: MLflow's own run names the pipeline run it started, and back.
)

# Registered versions and their data
TAG_MODEL_SHA256 = "mlops.model_sha256"
TAG_DATA_PREFIX = "mlops.data."
TAG_TRAINING_DATA = "mlops.training_data"
TAG_HELDOUT_DATA = "mlops.heldout_data"
TAG_PROMOTED_FROM = "mlops.promoted_from"  # <environment>:<version> of the source
TAG_PROMOTED_RUN = "mlops.promoted_from_run"  # the source version's run id
TAG_PROMOTED_URI = "mlops.promoted_from_uri"  # the source's tracking URI, secrets hidden
TAG_PROMOTED_BY = "mlops.promoted_by"
TAG_PROMOTED_AT = "mlops.promoted_at"

# MLflow's own
TAG_PARENT = "mlflow.parentRunId"
TAG_NOTE = "mlflow.note.content"  # the run's description in MLflow's UI
TAG_DATA_CONTEXT = "mlflow.data.context"
