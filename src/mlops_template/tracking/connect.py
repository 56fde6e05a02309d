"""Point MLflow at an environment's tracking store.

Kept apart from the runner so that every command that reads runs (`runs`,
`show`, `models`, `ui`) reaches the store the same way.
"""

from __future__ import annotations

import logging
import os
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from mlops_template.config import environ
from mlops_template.config.load import Config, Environment
from mlops_template.redact import redact
from mlops_template.tracking.failures import check_reachable, store_errors

if TYPE_CHECKING:
    from mlflow import MlflowClient

logger = logging.getLogger(__name__)


def connect(config: Config, env: Environment) -> str:
    """Configure MLflow for `env` and return the project's experiment id (created on first use).

    A SQLite store keeps its artifacts in `mlruns/` beside the database file
    whatever the working folder, so runs started anywhere in the project meet.
    The S3 settings MLflow reads from the process environment are set for
    `env`: call it inside :func:`environ.scope` (or `environ.scoped`) so that
    they are put back afterwards.
    """
    import mlflow

    environ.export(env)
    check_reachable(env)
    _set_uris(env)
    with store_errors(env), _creation_lock(env.tracking_uri):
        client = mlflow.MlflowClient()
        experiment = client.get_experiment_by_name(config.name)
        if experiment is None:
            experiment_id = _create_experiment(client, config.name, _artifact_location(env))
        else:
            experiment_id = experiment.experiment_id
        mlflow.set_experiment(experiment_id=experiment_id)
    return experiment_id


def point_at(env: Environment) -> None:
    """Point MLflow at `env`'s stores, probed first, without creating anything in them (unlike :func:`connect`).

    For callers that read an environment, or switch between two in one process
    (a promotion reads one and writes another): call it inside :func:`environ.scope`.
    """
    environ.export(env)
    check_reachable(env)
    _set_uris(env)


def _create_experiment(client: MlflowClient, name: str, artifact_location: str | None) -> str:
    """Create the project's experiment; if another process just did, use theirs."""
    from mlflow.exceptions import MlflowException

    try:
        return client.create_experiment(name, artifact_location=artifact_location)
    except MlflowException as exc:
        experiment = client.get_experiment_by_name(name)
        if experiment is None:
            raise
        logger.debug("experiment %s was created meanwhile: %s", name, exc.message)
        return experiment.experiment_id


@contextmanager
def _creation_lock(uri: str) -> Iterator[None]:
    """Processes opening one SQLite store take turns, so the first ones do not all create its tables at once.

    MLflow creates and migrates a new SQLite store on first use; two processes
    doing it together break each other's migration. The lock is a file in the
    temp folder named after the store (nothing is added to the project), held
    only while the store is opened and the experiment looked up.
    """
    path = local_store_path(uri) if uri.startswith("sqlite:///") else None
    if path is None:
        yield
        return
    import fcntl
    import hashlib
    import tempfile

    name = hashlib.sha256(str(path).encode()).hexdigest()[:16]
    lock = Path(tempfile.gettempdir()) / f"mlops-store-{name}.lock"
    try:
        handle = open(lock, "a+b")  # noqa: SIM115 (closed below)
    except OSError:  # another user's lock file: go on unlocked, as MLflow alone would
        yield
        return
    with handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


# A store URI fit to print (the name callers know it by): its secrets replaced by `***`.
display_uri = redact


def _set_uris(env: Environment) -> None:
    """Point MLflow at the environment's stores without leaving them in `os.environ`.

    MLflow copies the URIs into `MLFLOW_TRACKING_URI`/`MLFLOW_REGISTRY_URI`, which
    we read as the user's overrides: left there, the next project run in the
    same process would track into this one's store.
    """
    import mlflow

    saved = {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")}
    try:
        mlflow.set_tracking_uri(env.tracking_uri)
        mlflow.set_registry_uri(env.registry_uri or env.tracking_uri)
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _artifact_location(env: Environment) -> str | None:
    """Where a new experiment keeps its artifacts, when no server decides it.

    Beside a SQLite file, `mlruns/` next to it rather than under the cwd. With
    a shared database (PostgreSQL, MySQL, ...) reached directly, under the
    environment's storage (`<storage>/mlartifacts`), so that every process that
    shares the runs shares their models too. A tracking server chooses its own.
    """
    prefix = "sqlite:///"
    if env.tracking_uri.startswith(prefix):
        return (Path(env.tracking_uri[len(prefix) :]).parent / "mlruns").as_uri()
    if env.tracking_uri.split("://", 1)[0].split("+", 1)[0] not in ("postgresql", "mysql", "mssql"):
        return None
    if env.is_remote_storage:
        return env.storage.rstrip("/") + "/mlartifacts"
    return (Path(env.storage) / "mlartifacts").as_uri()


def client() -> MlflowClient:
    import mlflow

    return mlflow.MlflowClient()


def local_store_path(uri: str) -> Path | None:
    """The local path a store or artifact URI names (`sqlite:///`, `file:`, a plain path); None for a remote one."""
    if uri.startswith("sqlite:///"):
        return Path(urllib.parse.unquote(uri[len("sqlite:///") :])).resolve()
    parsed = urllib.parse.urlsplit(uri)
    if parsed.scheme == "file":
        return Path(urllib.request.url2pathname(parsed.path)).resolve()
    if parsed.scheme == "":
        return Path(uri).resolve()
    return None


def quiet_mlflow() -> None:
    """Keep MLflow's chatter (table creation, …) off the terminal; our own lines say what happened.

    Against a tracking server MLflow writes "View run …" and "View experiment …" to
    stdout whenever a run ends; the pipeline's summary already says where runs are.
    A user who sets MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT=false gets them back, and
    MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR=true MLflow's download bars.
    """
    import logging
    import os

    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    # Its "Downloading artifacts" bars: a line per model load, even into a log file.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

    import mlflow  # noqa: F401  (configures its loggers on import, so adjust them after)

    logging.getLogger("mlflow").setLevel(logging.WARNING)
    # It warns that pip is missing from uv-made environments; requirements are pinned explicitly anyway.
    logging.getLogger("mlflow.utils.environment").setLevel(logging.ERROR)
    # A model's serving check on its input example: the gate scores the logged model on the held-out rows anyway.
    logging.getLogger("mlflow.models.model").setLevel(logging.ERROR)
    import warnings

    # Integer columns are logged as doubles (models.flavors.served_example); the hint has nothing left to say.
    warnings.filterwarnings("ignore", message="Hint: Inferred schema contains integer column", category=UserWarning)
