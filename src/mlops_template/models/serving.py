"""Serving the version an alias names over HTTP, following the alias as it moves.

Each version is wrapped in MLflow's own scoring server (`scoring_server.init`:
`/ping`, `/version`, `/invocations` with `dataframe_split`, `dataframe_records`
and CSV, the logged signature enforced). The model inside is loaded like every
other load here: its files checked against the sha256 recorded at registration,
then by a route that runs none of their code (`registry.load_version`); it
predicts as `mlops run --step predict` does.

`AliasServer` is the ASGI application in front: it hands each request to the
version current when the request arrived, so a swap drops none in flight; it
adds `X-Model-Version` to every response, counts requests per version and
status for `/metrics` (Prometheus' text format), and takes any stack trace out
of an error's body. `check` asks the registry where the alias points and, when
it moved, loads the new version and swaps it in; a version that fails to load
is refused and the old one keeps serving.
"""

from __future__ import annotations

import json
import logging
import threading
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mlops_template.errors import ConfigError, MlopsError, TrackingError
from mlops_template.models import registry

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from mlops_template.config.load import Config, Environment
    from mlops_template.models.trust import Trust

logger = logging.getLogger(__name__)
METRICS_PATH = "/metrics"
VERSION_HEADER = b"x-model-version"


@dataclass(frozen=True)
class Served:
    """One loaded version and MLflow's scoring server around it."""

    version: str
    app: Any


class _Predictor:
    """What the scoring server calls: the loaded model's own predict, on the columns its signature names."""

    def __init__(self, champion: registry.Champion) -> None:
        from mlops_template.models.scoring import predict

        self._champion, self._predict = champion, predict

    def predict(self, data: Any, params: dict[str, Any] | None = None) -> Any:
        names = self._champion.feature_names
        if names is not None and list(data.columns) == names:  # the schema's enforcement put them so already
            return self._predict(self._champion.model, data)
        return self._champion.predict(data)


def load(client: MlflowClient, name: str, version: str, trust: Trust) -> Served:
    """Version `version` of `name`, verified and loaded as `trust` allows, inside MLflow's scoring server."""
    from mlflow.pyfunc import PyFuncModel
    from mlflow.pyfunc.scoring_server import init

    champion = registry.load_version(client, name, registry.version(client, name, version), trust)
    return Served(champion.version, init(PyFuncModel(model_meta=champion.metadata, model_impl=_Predictor(champion))))


class AliasServer:
    """The ASGI application: the alias's current version serving, swapped when the alias moves."""

    def __init__(self, client: MlflowClient, name: str, alias: str, trust: Trust, first: Served) -> None:
        self.client, self.name, self.alias, self.trust = client, name, alias, trust
        self.current = first
        self.requests: Counter[tuple[str, int]] = Counter()
        self._refused: str | None = None  # a version that failed to load: not tried again until the alias moves
        self._lock = threading.Lock()

    def check(self) -> str | None:
        """Follow the alias once: a log line when the served version changed or a new one was refused."""
        try:
            found = registry.holder(self.client, self.name, self.alias)
        except TrackingError as exc:
            return f"the registry did not answer ({exc}); still serving v{self.current.version}"
        if found is None or str(found.version) in (self.current.version, self._refused):
            return None
        version = str(found.version)
        try:
            served = load(self.client, self.name, version, self.trust)
        except MlopsError as exc:
            self._refused = version
            return (
                f"'{self.alias}' moved to v{version}, which was refused ({exc}); still serving v{self.current.version}"
            )
        previous, self.current, self._refused = self.current.version, served, None
        return f"'{self.alias}' moved: now serving v{served.version} (was v{previous})"

    def metrics(self) -> bytes:
        lines = [
            "# HELP mlops_requests_total Requests to /invocations, by the model version that answered and the status.",
            "# TYPE mlops_requests_total counter",
        ]
        with self._lock:
            counted = sorted(self.requests.items())
        lines += [f'mlops_requests_total{{version="{v}",status="{s}"}} {n}' for (v, s), n in counted]
        lines.append(f'mlops_served_version{{alias="{self.alias}"}} {self.current.version}')
        return ("\n".join(lines) + "\n").encode()

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        served = self.current  # this request's version, whatever the alias does meanwhile
        header = (VERSION_HEADER, served.version.encode())
        if scope["type"] == "http" and scope["path"] == METRICS_PATH:
            await _respond(send, 200, self.metrics(), b"text/plain; version=0.0.4", header)
            return
        counted = scope["type"] == "http" and scope["path"] == "/invocations"
        state: dict[str, Any] = {}

        async def reply(message: dict) -> None:
            if message["type"] == "http.response.start":
                if counted:
                    with self._lock:
                        self.requests[(served.version, message["status"])] += 1
                if message["status"] < 400:
                    await send({**message, "headers": [*message.get("headers", []), header]})
                    return
                # An error: held until its whole body is read, whose length changes without the stack trace.
                headers = [h for h in message.get("headers", []) if h[0].lower() != b"content-length"]
                state["start"] = {**message, "headers": [*headers, header]}
                return
            if "start" not in state:
                await send(message)
                return
            state.setdefault("body", []).append(message.get("body", b""))
            if not message.get("more_body"):  # an error's whole body: sent without a stack trace
                body = _without_stack_trace(b"".join(state["body"]))
                start = state.pop("start")
                start["headers"].append((b"content-length", str(len(body)).encode()))
                await send(start)
                await send({"type": "http.response.body", "body": body})

        await served.app(scope, receive, reply)


def _without_stack_trace(body: bytes) -> bytes:
    """An error body as MLflow's scoring server wrote it, less its `stack_trace`: the message stays."""
    try:
        found = json.loads(body)
    except ValueError:
        return body
    if isinstance(found, dict) and "stack_trace" in found:
        found.pop("stack_trace")
        return json.dumps(found).encode()
    return body


async def _respond(send: Any, status: int, body: bytes, content_type: bytes, *headers: tuple[bytes, bytes]) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", content_type), (b"content-length", str(len(body)).encode()), *headers],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def _lifespan(receive: Any, send: Any) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


def serve(
    config: Config,
    env: Environment,
    *,
    alias: str = registry.CHAMPION,
    host: str = "127.0.0.1",
    port: int = 5001,
    poll: float = 30.0,
    echo: Any = print,
) -> None:
    """Serve `alias`'s version of the project's model in the foreground until interrupted.

    Everything that can stop it is found before it listens: no version under
    the alias, a port already in use, files that do not match their sha256.
    """
    import gc

    import mlflow
    import uvicorn

    from mlops_template.config.environ import scope
    from mlops_template.models.trust import Trust
    from mlops_template.tracking.connect import connect

    with scope():
        connect(config, env)
        client = mlflow.MlflowClient()
        name = config.model.name
        fix = f"run the pipeline (mlops run -e {env.name}) or point it at a version (mlops promote VERSION)"
        found = _aliased(client, name, alias, env, fix)
        _check_port(host, port)
        app = AliasServer(client, name, alias, Trust.of(config.model_in(env.name), env.name), Served("", None))
        app.current = load(client, name, str(found.version), app.trust)
        stop = threading.Event()

        def follow() -> None:
            while not stop.wait(poll):
                line = app.check()
                if line:
                    logger.warning("%s", line)

        echo(
            f"Serving {name} v{app.current.version} ('{alias}' in {env.name}) at http://{host}:{port}/invocations; "
            f"following '{alias}' every {poll:g} s (Ctrl+C to stop)"
        )
        threading.Thread(target=follow, name="mlops-serve-alias", daemon=True).start()
        gc.collect()
        gc.freeze()  # what is loaded by now (MLflow, pandas, the model) is not traversed by every collection
        # uvicorn binds the address itself: a socket handed to it served a third fewer requests a second
        config = uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="on", access_log=False)
        try:
            uvicorn.Server(config).run()
        finally:
            stop.set()


def _aliased(client: MlflowClient, name: str, alias: str, env: Environment, fix: str) -> Any:
    """The version `alias` names; one line ending in `fix` when none carries it yet."""
    found = registry.holder(client, name, alias)
    if found is None:
        raise TrackingError(
            f"environment '{env.name}': no version of model '{name}' carries the alias '{alias}' yet; {fix}"
        )
    return found


def _check_port(host: str, port: int) -> None:
    """Nothing when `host:port` can be listened on; else one line saying why not."""
    import socket

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    listener = socket.socket(family, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listener.bind((host, port))
    except OSError as exc:
        listener.close()
        raise ConfigError(f"cannot listen on {host}:{port} ({exc.strerror or exc}); pass another --port") from exc
    listener.close()


def manifest(config: Config, env: Environment, *, alias: str = registry.CHAMPION) -> dict[str, Any]:
    """A KServe `InferenceService` serving `alias`'s current version from the environment's bucket.

    KServe's MLflow runtime reads the exported model folder (`models/<name>/v<N>/`,
    the same files whose sha256 the registry records); the version is pinned as it
    is now, so a new champion needs the manifest written again. The pod runs as
    `[dag] service_account`, which carries the bucket's credentials.
    """
    import re

    import mlflow

    from mlops_template.config.environ import scope
    from mlops_template.storage import open_storage
    from mlops_template.tracking.connect import connect

    if not env.is_remote_storage:
        raise ConfigError(
            f"environment '{env.name}' keeps its data in a local folder ({env.storage}), which a cluster cannot read; "
            "write the manifest for an environment whose storage is a bucket (--environment prod)"
        )
    with scope():
        connect(config, env)
        name = config.model.name
        fix = f"promote one there first (mlops promote VERSION --to {env.name})"
        version = str(_aliased(mlflow.MlflowClient(), name, alias, env, fix).version)
        uri = open_storage(env).uri(registry.export_folder(name, version))
    service = re.sub(r"[^a-z0-9-]", "-", config.name.lower()).strip("-")[:63] or "model"
    predictor: dict[str, Any] = {
        "model": {"modelFormat": {"name": "mlflow"}, "protocolVersion": "v2", "storageUri": uri},
    }
    if config.dag.service_account:
        predictor["serviceAccountName"] = config.dag.service_account
    return {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": {
            "name": service,
            "labels": {"app.kubernetes.io/managed-by": "mlops-template"},
            "annotations": {"mlops/model": name, "mlops/version": version, "mlops/alias": alias},
        },
        "spec": {"predictor": predictor},
    }
