"""Point MLflow at an environment's tracking store and describe the code being run.

Kept apart from the runner so that every command that reads runs (`runs`,
`show`, `models`, `ui`) reaches the store the same way.
"""

from __future__ import annotations

import os
import subprocess
import urllib.error
import urllib.request
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
