"""The process variables an environment needs while it is in use, set only for as long as it is.

MLflow's S3 artifact client (and boto3 under it) reads the S3 endpoint, the AWS
profile and the region from `os.environ`, not from arguments, so while an
environment's runs are tracked its values must be there. Left behind, they
would leak into the next environment one process uses (a notebook, a
long-lived worker): its artifacts sent to this endpoint with this profile,
and `Config.environment` reading them back as if the user had set them.

- :func:`scope` (or the :func:`scoped` decorator) puts back, when it ends,
  every variable the library or MLflow sets for an environment, and drops the
  clients built from them;
- :func:`export` sets an environment's values (inside a scope);
- :func:`activate` is both, for code that talks to an environment's stores
  itself;
- :func:`user_value` is what the user set, whatever the library put there.

The process environment is shared by all its threads: one environment at a
time per process.
"""

from __future__ import annotations

import functools
import os
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, ParamSpec, TypeVar

from mlops_template.config.aws import usable_profile

if TYPE_CHECKING:
    from mlops_template.config.load import Environment

# How long MLflow's REST client waits on a tracking server: per request, and how often it tries again.
HTTP = ("MLFLOW_HTTP_REQUEST_TIMEOUT", "MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR")
# What `export` sets for an environment.
EXPORTED = ("MLFLOW_S3_ENDPOINT_URL", "AWS_PROFILE", "AWS_DEFAULT_REGION", *HTTP)
# What a scope puts back: those, and what MLflow copies into the environment for its subprocesses.
RESTORED = (*EXPORTED, "MLFLOW_EXPERIMENT_ID", "MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "MLFLOW_RUN_ID")

_lock = threading.RLock()
_user: dict[str, str | None] = {}  # variable -> its value before the library set it (the user's)
_ours: dict[str, str] = {}  # variable -> the value the library set

P = ParamSpec("P")
R = TypeVar("R")


def user_value(name: str) -> str | None:
    """The variable as the user set it: what it was before the library set it, while it still holds the library's value."""
    with _lock:
        current = os.environ.get(name)
        if name in _ours and current == _ours[name]:
            return _user[name]
        return current


def export(env: Environment) -> None:
    """Set the variables MLflow's S3 client reads to `env`'s endpoint, profile and region.

    A value the environment does not give stays the user's (or becomes it
    again after another environment's). Cached S3 clients are dropped when a
    value changes, so none is reused with another environment's settings.
    """
    wanted = {
        "MLFLOW_S3_ENDPOINT_URL": env.s3_endpoint_url,
        "AWS_PROFILE": usable_profile(env.aws_profile, environment=env.name),
        "AWS_DEFAULT_REGION": env.aws_region,
        **{name: user_value(name) or value for name, value in http_waits(env.tracking_timeout).items()},
    }
    with _lock:
        before = {name: os.environ.get(name) for name in wanted}
        for name, value in wanted.items():
            user = user_value(name)
            if value and value != user:
                _user[name], _ours[name] = user, value
                os.environ[name] = value
            else:
                _user.pop(name, None)
                _ours.pop(name, None)
                _put(name, user)
        if any(os.environ.get(name) != value for name, value in before.items()):
            _drop_clients()


def http_waits(seconds: int) -> dict[str, str]:
    """MLflow's REST settings so that one call to a server that stopped answering gives up within `seconds`.

    MLflow's own defaults (120 s a request, 7 retries with doubling waits)
    hold a step 20 minutes or more. Here: three tries of a third of the time
    each, less the two short waits between them (urllib3 waits 0 s, then 2 s).
    """
    return {
        "MLFLOW_HTTP_REQUEST_TIMEOUT": str(max(3, (seconds - 4) // 3)),
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
        "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    }


def give_up_quickly() -> None:
    """From now until the scope ends, MLflow's REST calls try once, for 5 s at most.

    For recording a failure after the tracking server was lost: every call
    then would wait the full bounded time again, one after another.
    """
    with _lock:
        os.environ.update(
            {
                "MLFLOW_HTTP_REQUEST_TIMEOUT": "5",
                "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
                "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "0",
            }
        )


@contextmanager
def scope() -> Iterator[None]:
    """Everything the library and MLflow set in `os.environ` for an environment is put back on exit.

    Also boto3's default session: MLflow builds its S3 clients from it, and it
    keeps the credentials it found first.
    """
    with _lock:
        saved = {name: os.environ.get(name) for name in RESTORED}
        state = dict(_user), dict(_ours)
        boto3 = sys.modules.get("boto3")
        session = getattr(boto3, "DEFAULT_SESSION", None)
    try:
        yield
    finally:
        with _lock:
            changed = [name for name, value in saved.items() if os.environ.get(name) != value]
            for name in changed:
                _put(name, saved[name])
            _user.clear()
            _user.update(state[0])
            _ours.clear()
            _ours.update(state[1])
            if changed:
                _drop_clients()
                boto3 = sys.modules.get("boto3")
                if boto3 is not None:
                    boto3.DEFAULT_SESSION = session


def scoped(func: Callable[P, R]) -> Callable[P, R]:
    """Decorator: `func` runs inside a :func:`scope`."""

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        with scope():
            return func(*args, **kwargs)

    return wrapper


@contextmanager
def activate(env: Environment) -> Iterator[Environment]:
    """`env`'s variables set for the block and put back after it, e.g. around MLflow calls in a notebook."""
    with scope():
        export(env)
        yield env


def _put(name: str, value: str | None) -> None:
    if value is None:
        os.environ.pop(name, None)
    else:
        os.environ[name] = value


def _drop_clients() -> None:
    """Forget S3 clients built from the variables: boto3's default session, MLflow's cache of S3 clients."""
    boto3 = sys.modules.get("boto3")
    if boto3 is not None:
        boto3.DEFAULT_SESSION = None
    repository = sys.modules.get("mlflow.store.artifact.s3_artifact_repo")
    cached = getattr(repository, "_cached_get_s3_client", None)
    if cached is not None and hasattr(cached, "cache_clear"):
        cached.cache_clear()
