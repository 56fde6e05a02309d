"""Point MLflow at an environment's tracking store and describe the code being run.

Kept apart from the runner so that every command that reads runs (`runs`,
`show`, `models`, `ui`) reaches the store the same way.
"""

from __future__ import annotations

import logging
import os
import re
import sqlite3
import subprocess
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from mlops_template.config import environ
from mlops_template.config.load import Config, Environment
from mlops_template.errors import TrackingError
from mlops_template.redact import redact, redact_text, redacted_repr
from mlops_template.tracking.tags import (
    TAG_ENVIRONMENT,
    TAG_GIT_COMMIT,
    TAG_GIT_DIRTY,
    TAG_NOTE,
    TAG_PIPELINE,
    TAG_PIPELINE_RUN_ID,
)

if TYPE_CHECKING:
    from mlflow import MlflowClient

logger = logging.getLogger(__name__)

# Where a process without a git repository (an image) learns the commit it runs.
IMAGE_COMMIT = "MLOPS_GIT_COMMIT"

# How long a tracking or registry server has to answer the first request before it counts as down.
PROBE_SECONDS = 3.0

# What `mlflow run` hands the entry point's process.
_PROJECT_RUN_VARIABLES = ("MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID", "MLFLOW_TRACKING_URI")


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
    _check_reachable(env)
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
    _check_reachable(env)
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


def store_failures() -> tuple[type[BaseException], ...]:
    """What a failing store raises: MLflow's own error, the database driver's, a network or file error."""
    from mlflow.exceptions import MlflowException

    failures: list[type[BaseException]] = [MlflowException, OSError, sqlite3.Error]
    try:
        from sqlalchemy.exc import SQLAlchemyError
    except ImportError:  # a client-only MLflow install talks to servers, never to a database
        pass
    else:
        failures.append(SQLAlchemyError)
    return tuple(failures)


@contextmanager
def store_errors(env: Environment, *, registry: bool = False) -> Iterator[None]:
    """Turn a failure of the tracking store (or, with `registry`, the model registry) into one TrackingError line.

    The line names the store, what went wrong and what to change, and keeps
    the original error as its cause for `--verbose`.
    """
    try:
        yield
    except store_failures() as exc:
        raise TrackingError(describe_failure(env, exc, registry=registry)) from exc


def describe_failure(env: Environment, exc: BaseException, *, registry: bool = False) -> str:
    """One line: which store of which environment failed, the problem, and the fix."""
    if registry and env.registry_uri:
        uri, setting = env.registry_uri, "registry_uri in mlops.toml or MLFLOW_REGISTRY_URI"
    else:
        uri, setting = env.tracking_uri, "tracking_uri in mlops.toml or MLFLOW_TRACKING_URI"
    store = "model registry" if registry else "tracking store"
    causes = list(_causes(exc))
    return redact_text(
        f"environment '{env.name}': {store} {redact(uri)} failed: {_problem(causes)}; {_fix(uri, causes, setting)}"
    )


def _causes(exc: BaseException) -> list[BaseException]:
    """The error and those it was raised from or while handling, outermost first."""
    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and all(current is not seen for seen in chain):
        chain.append(current)
        current = current.__cause__ or current.__context__
    return chain


def _problem(causes: list[BaseException]) -> str:
    """The error's first line; for a lost connection, the network's own reason rather than MLflow's retry report."""
    if any(_is_connection_error(c) for c in causes):
        return f"the connection failed ({_short(causes[-1])})"
    original = getattr(causes[0], "orig", None)  # SQLAlchemy keeps the driver's error here
    return _short(original if isinstance(original, BaseException) else causes[0])


def _fix(uri: str, causes: list[BaseException], setting: str) -> str:
    if any("is not a database" in str(c) for c in causes):
        return f"that file is not an MLflow SQLite store: move it aside to start a new one, or fix {setting}"
    if uri.startswith(("http://", "https://")):
        if any(_is_connection_error(c) for c in causes):
            return f"start the server or fix {setting}"
        return f"check that the server is an MLflow tracking server and its URL is right ({setting})"
    if any(isinstance(c, OSError) for c in causes):
        return f"point {setting} at a folder this user can create and write"
    return f"check {setting}"


def _is_connection_error(exc: BaseException) -> bool:
    """A refused, reset or dropped connection: the builtin kinds and requests'/urllib3's own."""
    return isinstance(exc, ConnectionError) or type(exc).__name__ in (
        "ConnectionError",
        "NewConnectionError",
        "ProtocolError",
        "RemoteDisconnected",
    )


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


def _check_reachable(env: Environment) -> None:
    """Fail in seconds, before any run exists, when a tracking or registry server is down or is not MLflow.

    One request each, without MLflow's retries (minutes of them for a server
    that is down), with MLflow's own credentials and TLS settings.
    """
    _probe_server(env, env.tracking_uri, registry=False)
    if env.registry_uri and env.registry_uri != env.tracking_uri:
        _probe_server(env, env.registry_uri, registry=True)


_DATABASE_PORTS = {"postgresql": 5432, "mysql": 3306, "mssql": 1433}


def _probe_database(env: Environment, uri: str, *, registry: bool) -> None:
    """A database reached directly: one TCP connection to it, not MLflow's minutes of engine retries."""
    import socket

    scheme = uri.split("://", 1)[0].split("+", 1)[0]
    parts = urllib.parse.urlsplit(uri)
    if not parts.hostname:
        return  # a local socket: the driver reports it
    port = parts.port or _DATABASE_PORTS[scheme]
    store = "model registry" if registry else "tracking store"
    setting = (
        "registry_uri in mlops.toml / MLFLOW_REGISTRY_URI"
        if registry
        else "tracking_uri in mlops.toml / MLFLOW_TRACKING_URI"
    )
    try:
        socket.create_connection((parts.hostname, port), timeout=PROBE_SECONDS).close()
    except OSError as exc:
        raise TrackingError(
            f"environment '{env.name}': {store} {redact(uri)} is unreachable ({exc.strerror or exc}); "
            f"start the database or fix {setting}"
        ) from exc


def _probe_server(env: Environment, uri: str, *, registry: bool) -> None:
    if uri.split("://", 1)[0].split("+", 1)[0] in _DATABASE_PORTS:
        _probe_database(env, uri, registry=registry)
        return
    if not uri.startswith(("http://", "https://")):
        return
    from mlflow.utils.credentials import get_default_host_creds
    from mlflow.utils.rest_utils import http_request

    if registry:
        store, setting = "model registry server", "registry_uri in mlops.toml / MLFLOW_REGISTRY_URI"
        endpoint, query = "/api/2.0/mlflow/registered-models/get", {"name": "mlops-probe"}
    else:
        store, setting = "tracking server", "tracking_uri in mlops.toml / MLFLOW_TRACKING_URI"
        endpoint, query = "/api/2.0/mlflow/experiments/get-by-name", {"experiment_name": "mlops-probe"}
    where = f"environment '{env.name}': {store} {redact(uri)}"
    try:
        response = http_request(
            get_default_host_creds(uri),
            endpoint,
            "GET",
            max_retries=0,
            backoff_factor=0,
            timeout=PROBE_SECONDS,
            raise_on_status=False,
            params=query,
        )
    except Exception as exc:  # MLflow wraps every network failure in an MlflowException; its causes tell which
        causes = _causes(exc)
        if any(_is_unreachable(c) for c in causes):
            raise TrackingError(
                redact_text(f"{where} is unreachable ({causes[-1]}); start it or fix {setting}")
            ) from exc
        if any("timeout" in type(c).__name__.lower() for c in causes):
            raise TrackingError(
                f"{where} did not answer within {PROBE_SECONDS:.0f} s; check that it is running and fix {setting}"
            ) from exc
        raise TrackingError(describe_failure(env, exc, registry=registry)) from exc
    status = response.status_code
    if status in (401, 403):
        raise TrackingError(
            f"{where} refused the credentials (HTTP {status}); set MLFLOW_TRACKING_USERNAME and "
            "MLFLOW_TRACKING_PASSWORD (or MLFLOW_TRACKING_TOKEN) to ones it accepts"
        )
    body = _mlflow_answer(response)
    if body is None:
        kind = response.headers.get("Content-Type", "").split(";")[0] or "no content type"
        raise TrackingError(
            f"{where} does not answer as an MLflow server (HTTP {status}, {kind}); point {setting} at one"
        )
    if status >= 500:  # MLflow would retry this for minutes
        message = str(body.get("message", "")).strip().splitlines()[:1]
        raise TrackingError(
            redact_text(
                f"{where} failed (HTTP {status}: {body.get('error_code')}{': ' + message[0] if message else ''}); "
                "check the server's log and its database"
            )
        )


def _is_unreachable(exc: BaseException) -> bool:
    """No connection was made: refused, unknown host, no route, or connecting timed out (urllib3's and requests' kinds)."""
    return isinstance(exc, ConnectionRefusedError) or type(exc).__name__ in (
        "NewConnectionError",
        "NameResolutionError",
        "ConnectTimeoutError",
        "ConnectTimeout",
        "gaierror",
    )


def _mlflow_answer(response) -> dict | None:
    """The JSON object MLflow's REST API answers (what was asked for, or an error naming its code); None otherwise."""
    try:
        body = response.json()
    except ValueError:
        return None
    if isinstance(body, dict) and (response.status_code == 200 or "error_code" in body):
        return body
    return None


@redacted_repr
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
    path = local_store_path(uri)
    here = Path.cwd()
    return path is not None and path in {(here / "mlflow.db").resolve(), (here / "mlruns").resolve()}


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
        for key, value in {**tags, TAG_NOTE: note}.items():
            outer.set_tag(launched.run_id, key, value)
    except Exception as exc:
        raise TrackingError(
            f"`mlflow run`'s run {launched.run_id} could not be tagged with pipeline run {pipeline_run_id} "
            f"({redact_text(_short(exc))}); check the MLFLOW_TRACKING_URI `mlflow run` was given"
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
    """The commit checked out in `root` and whether the work tree differs from it.

    Where git is missing or `root` has no commit, the run is still tagged
    (commit `none`, dirty `unknown`) and a warning says how to get the code
    version recorded: a run whose code cannot be found again is hard to trust.
    """

    def git(*args: str) -> tuple[str | None, str]:
        """Its output, or None and why it failed."""
        try:
            out = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=10, check=True)
        except FileNotFoundError:
            return None, "git is not installed"
        except subprocess.CalledProcessError as exc:
            lines = (exc.stderr or "").strip().splitlines()
            return None, lines[0] if lines else ""
        except (OSError, subprocess.SubprocessError) as exc:
            return None, str(exc)
        return out.stdout.strip(), ""

    commit, why = git("rev-parse", "--verify", "--quiet", "HEAD^{commit}")
    if commit is None:
        built = image_commit()
        if built is not None:
            return built
        logger.warning(
            "code version not recorded for this run (%s=none): %s: %s; %s",
            TAG_GIT_COMMIT,
            root,
            why.removeprefix("fatal: ") or "the repository has no commit yet",
            _git_fix(root, why),
        )
        return GitState(commit="none", dirty=None)
    status, why = git("status", "--porcelain", "--untracked-files=normal")
    if status is None:
        logger.warning(
            "cannot tell whether this run's code differs from commit %s (%s=unknown): %s: %s",
            commit[:12],
            TAG_GIT_DIRTY,
            root,
            why.removeprefix("fatal: ") or "git status failed",
        )
    return GitState(commit=commit, dirty=None if status is None else bool(status))


def image_commit() -> GitState | None:
    """In an image, which has no `.git`: the commit it was built from, as `MLOPS_GIT_COMMIT` names it.

    `scripts/build_image.sh` tags the image with the full commit SHA (`-dirty`
    when it built uncommitted changes); the DAG's pods and `scripts/run_image*.sh`
    pass that tag in. Anything else is not taken for a commit.
    """
    value = os.environ.get(IMAGE_COMMIT, "").strip()
    if not value:
        return None
    found = re.fullmatch(r"([0-9a-f]{40})(-dirty)?", value)
    if found is None:
        logger.warning(
            "code version not recorded for this run (%s=none): %s=%r is not a commit SHA; "
            "give the full 40-character SHA the image was built from (scripts/build_image.sh tags it so)",
            TAG_GIT_COMMIT,
            IMAGE_COMMIT,
            value[:80],
        )
        return GitState(commit="none", dirty=None)
    return GitState(commit=found.group(1), dirty=found.group(2) is not None)


def _git_fix(root: Path, why: str) -> str:
    if why == "git is not installed":
        return f"install git, or in an image set {IMAGE_COMMIT} to the commit it was built from"
    if "dubious ownership" in why:
        return f"trust the folder: git config --global --add safe.directory {root}"
    return "commit the code there: git init && git add -A && git commit -m start"


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:300]


def quiet_mlflow() -> None:
    """Keep MLflow's chatter (table creation, …) off the terminal; our own lines say what happened.

    Against a tracking server MLflow writes "View run …" and "View experiment …" to
    stdout whenever a run ends; the pipeline's summary already says where runs are.
    A user who sets MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT=false gets them back.
    """
    import logging
    import os

    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")

    import mlflow  # noqa: F401  (configures its loggers on import, so adjust them after)

    logging.getLogger("mlflow").setLevel(logging.WARNING)
    # It warns that pip is missing from uv-made environments; requirements are pinned explicitly anyway.
    logging.getLogger("mlflow.utils.environment").setLevel(logging.ERROR)
