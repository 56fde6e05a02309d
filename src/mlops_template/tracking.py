"""Point MLflow at an environment's tracking store and describe the code being run.

Kept apart from the runner so that every command that reads runs (`runs`,
`show`, `models`, `ui`) reaches the store the same way.
"""

from __future__ import annotations

import os
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .aws import usable_profile
from .config import Config, Environment
from .errors import TrackingError

if TYPE_CHECKING:
    from mlflow import MlflowClient

# Tag names shared by runs, versions and commands (DESIGN.md, "MLflow conventions").
TAG_PIPELINE = "mlops.pipeline"
TAG_ENVIRONMENT = "mlops.environment"
TAG_GIT_COMMIT = "mlops.git_commit"
TAG_GIT_DIRTY = "mlops.git_dirty"
TAG_STEPS = "mlops.steps"
TAG_STEP = "mlops.step"
TAG_GATE = "mlops.gate"
TAG_GATE_REASON = "mlops.gate_reason"
TAG_MODEL_SHA256 = "mlops.model_sha256"
TAG_DATA_PREFIX = "mlops.data."
TAG_TRAINING_DATA = "mlops.training_data"
TAG_HELDOUT_DATA = "mlops.heldout_data"
TAG_MODEL_VERSION = "mlops.model_version"
# Under `mlflow run`: MLflow's own run names the pipeline run it started, and back.
TAG_PIPELINE_RUN_ID = "mlops.pipeline_run_id"
TAG_LAUNCHED_BY = "mlops.launched_by"

# What `mlflow run` hands the entry point's process.
_PROJECT_RUN_VARIABLES = ("MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID", "MLFLOW_TRACKING_URI")


def connect(config: Config, env: Environment) -> str:
    """Configure MLflow for `env` and return the project's experiment id (created on first use).

    A SQLite store keeps its artifacts in `mlruns/` beside the database file
    whatever the working folder, so runs started anywhere in the project meet.
    """
    import mlflow

    _export_artifact_settings(env)
    _check_reachable(env)
    _set_uris(env)
    client = mlflow.MlflowClient()
    try:
        experiment = client.get_experiment_by_name(config.name)
        if experiment is None:
            experiment_id = client.create_experiment(config.name, artifact_location=_artifact_location(env))
        else:
            experiment_id = experiment.experiment_id
    except Exception as exc:
        raise TrackingError(
            f"environment '{env.name}': tracking store {env.tracking_uri} failed ({_short(exc)}); "
            "check tracking_uri in mlops.toml or MLFLOW_TRACKING_URI"
        ) from exc
    mlflow.set_experiment(experiment_id=experiment_id)
    return experiment_id


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
    """Beside a SQLite file, artifacts go to `mlruns/` next to it rather than under the cwd."""
    prefix = "sqlite:///"
    if env.tracking_uri.startswith(prefix):
        return (Path(env.tracking_uri[len(prefix) :]).parent / "mlruns").as_uri()
    return None


def client() -> MlflowClient:
    import mlflow

    return mlflow.MlflowClient()


def _export_artifact_settings(env: Environment) -> None:
    """MLflow's S3 artifact client reads these from the process environment, not from arguments."""
    if env.s3_endpoint_url:
        os.environ["MLFLOW_S3_ENDPOINT_URL"] = env.s3_endpoint_url
    profile = usable_profile(env.aws_profile, environment=env.name)
    if profile:
        os.environ.setdefault("AWS_PROFILE", profile)
    if env.aws_region:
        os.environ.setdefault("AWS_DEFAULT_REGION", env.aws_region)


def _check_reachable(env: Environment) -> None:
    """Fail in seconds, not after MLflow's minutes of retries, when a tracking server is down."""
    uri = env.tracking_uri
    if not uri.startswith(("http://", "https://")):
        return
    try:
        with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=5):
            pass
    except urllib.error.HTTPError:
        return  # it answered: reachable, whatever it thinks of /health
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise TrackingError(
            f"environment '{env.name}': tracking server {uri} is unreachable ({reason}); "
            "start it or fix tracking_uri in mlops.toml / MLFLOW_TRACKING_URI"
        ) from exc


@dataclass(frozen=True)
class LaunchedRun:
    """The run `mlflow run` created for this process, and the tracking store MLflow keeps it in."""

    run_id: str
    tracking_uri: str | None


@contextmanager
def launched_run() -> Iterator[LaunchedRun | None]:
    """Under `mlflow run` (MLFLOW_RUN_ID set), MLflow's run, with MLflow's variables out of the way meanwhile.

    MLflow hands its run to an entry point as MLFLOW_RUN_ID, MLFLOW_EXPERIMENT_ID and
    MLFLOW_TRACKING_URI. Left in place, every nested run would resume MLflow's run, and
    the store MLflow falls back to when given none (`./mlflow.db`, or `./mlruns`) would
    read as the user's override of the environment's store. A URI the user gave
    (`MLFLOW_TRACKING_URI=… mlflow run …`) stays an override. Restored on exit.
    """
    run_id = os.environ.get("MLFLOW_RUN_ID")
    if not run_id:
        yield None
        return
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    keep = () if uri is None or _is_mlflow_fallback(uri) else ("MLFLOW_TRACKING_URI",)
    saved = {k: os.environ.pop(k) for k in _PROJECT_RUN_VARIABLES if k in os.environ and k not in keep}
    try:
        yield LaunchedRun(run_id, uri)
    finally:
        os.environ.update(saved)


def _is_mlflow_fallback(uri: str) -> bool:
    """Whether `uri` is the store MLflow uses in this folder when no tracking URI is set."""
    path = _local_store_path(uri)
    here = Path.cwd()
    return path is not None and path in {(here / "mlflow.db").resolve(), (here / "mlruns").resolve()}


def _local_store_path(uri: str) -> Path | None:
    if uri.startswith("sqlite:///"):
        return Path(urllib.parse.unquote(uri[len("sqlite:///") :])).resolve()
    parsed = urllib.parse.urlsplit(uri)
    if parsed.scheme == "file":
        return Path(urllib.request.url2pathname(parsed.path)).resolve()
    if parsed.scheme == "":
        return Path(uri).resolve()
    return None


def joins_launched_run(launched: LaunchedRun, experiment_id: str) -> bool:
    """Whether MLflow's run is in the connected store and the project's experiment, so it can be the pipeline run."""
    from mlflow.exceptions import MlflowException

    try:
        return client().get_run(launched.run_id).info.experiment_id == experiment_id
    except MlflowException:  # not in this store
        return False


def point_launched_run(launched: LaunchedRun, pipeline_run_id: str, config: Config, env: Environment) -> None:
    """Tag MLflow's run, in its own store, with the pipeline run it started, so one leads to the other.

    Nothing to tag when MLFLOW_RUN_ID came without a store (set by hand, not by `mlflow run`).
    """
    import mlflow

    if launched.tracking_uri is None:
        return

    note = (
        f"`mlflow run` of {config.name}: its steps ran as pipeline run {pipeline_run_id}, tracked in environment "
        f"'{env.name}' (experiment '{config.name}'); `mlops runs` and `mlops ui` in the project folder show it."
    )
    tags = {TAG_PIPELINE_RUN_ID: pipeline_run_id, TAG_PIPELINE: config.name, TAG_ENVIRONMENT: env.name}
    try:
        outer = mlflow.MlflowClient(tracking_uri=launched.tracking_uri)
        for key, value in {**tags, "mlflow.note.content": note}.items():
            outer.set_tag(launched.run_id, key, value)
    except Exception as exc:
        raise TrackingError(
            f"`mlflow run`'s run {launched.run_id} could not be tagged with pipeline run {pipeline_run_id} "
            f"({_short(exc)}); check the MLFLOW_TRACKING_URI `mlflow run` was given"
        ) from exc


@dataclass(frozen=True)
class GitState:
    commit: str
    dirty: bool | None

    @property
    def tags(self) -> dict[str, str]:
        return {
            TAG_GIT_COMMIT: self.commit,
            TAG_GIT_DIRTY: "unknown" if self.dirty is None else str(self.dirty).lower(),
        }


def git_state(root: Path) -> GitState:
    """The commit checked out in `root` and whether the work tree differs from it."""

    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=10, check=True)
        except (OSError, subprocess.SubprocessError):
            return None
        return out.stdout.strip()

    commit = git("rev-parse", "HEAD")
    if commit is None:
        return GitState(commit="none", dirty=None)
    status = git("status", "--porcelain", "--untracked-files=normal")
    return GitState(commit=commit, dirty=None if status is None else bool(status))


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:300]
