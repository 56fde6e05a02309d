"""When a tracking store or model registry fails: one line naming the store, the problem and the fix.

Servers and databases are probed with one short request before anything is
written (MLflow itself would retry for minutes); whatever fails later inside
MLflow, its database driver or the network is turned into the same kind of line.
"""

from __future__ import annotations

import sqlite3
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager

from mlops_template.config.load import Environment
from mlops_template.errors import TrackingError
from mlops_template.redact import redact, redact_text

# How long a tracking or registry server has to answer the first request before it counts as down.
PROBE_SECONDS = 3.0


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
        return f"the connection failed ({one_line(causes[-1])})"
    original = getattr(causes[0], "orig", None)  # SQLAlchemy keeps the driver's error here
    return one_line(original if isinstance(original, BaseException) else causes[0])


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


def server_lost(exc: BaseException) -> bool:
    """Whether an error came from a tracking server that stopped answering: refused, reset, or timed out."""
    causes = _causes(exc)
    return any(
        _is_connection_error(c) or _is_unreachable(c) or "timeout" in type(c).__name__.lower() for c in causes
    ) and any(type(c).__name__ in ("MlflowException", "RestException") for c in causes)


def _is_connection_error(exc: BaseException) -> bool:
    """A refused, reset or dropped connection: the builtin kinds and requests'/urllib3's own."""
    return isinstance(exc, ConnectionError) or type(exc).__name__ in (
        "ConnectionError",
        "NewConnectionError",
        "ProtocolError",
        "RemoteDisconnected",
    )


def check_reachable(env: Environment) -> None:
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
    where = f"environment '{env.name}': {store} {redact(uri)}"
    try:
        socket.create_connection((parts.hostname, port), timeout=PROBE_SECONDS).close()
    except OSError as exc:
        raise TrackingError(
            f"{where} is unreachable ({exc.strerror or exc}); start the database or fix {setting}"
        ) from exc
    _probe_login(uri, scheme, where, setting)


def _probe_login(uri: str, scheme: str, where: str, setting: str) -> None:
    """Log in once, as MLflow will: a missing driver or a refused password fails here in seconds.

    MLflow retries creating its database engine ten times over about 100 s,
    whatever the reason it failed.
    """
    import sqlalchemy
    from sqlalchemy.pool import NullPool

    timeout = {"postgresql": {"connect_timeout": int(PROBE_SECONDS)}, "mysql": {"connect_timeout": int(PROBE_SECONDS)}}
    try:
        engine = sqlalchemy.create_engine(uri, poolclass=NullPool, connect_args=timeout.get(scheme, {}))
    except ModuleNotFoundError as exc:
        raise TrackingError(
            f"{where} needs the database driver '{exc.name}', which is not installed; "
            f"pip install {exc.name}, or for PostgreSQL write postgresql:// (the driver installed with mlops-template)"
        ) from exc
    try:
        with engine.connect():
            pass
    except Exception as exc:  # noqa: BLE001 - each driver raises its own kinds; SQLAlchemy wraps them
        original = getattr(exc, "orig", None) or exc
        text = str(original).strip()
        if "password" in text.lower():
            fix = (
                "give the user's password in the URI through MLFLOW_TRACKING_URI (a variable, kept out of "
                f"mlops.toml) or in ~/.pgpass, or fix {setting}"
            )
        else:
            fix = f"check the database, its user and name in {setting}"
        raise TrackingError(redact_text(f"{where} refused the login ({one_line(original)}); {fix}")) from exc
    finally:
        engine.dispose()


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


def one_line(exc: BaseException) -> str:
    """An error as `Type: its first line`, short enough for a message."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:300]
