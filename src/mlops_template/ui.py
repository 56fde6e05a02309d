"""`mlops ui`: MLflow's own UI, on loopback, over an environment's tracking store."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable

from .config import Config, Environment
from .errors import TrackingError


def ui_command(env: Environment, *, port: int, host: str = "127.0.0.1") -> list[str]:
    """The `mlflow ui` command line for an environment's store: one worker, as it serves one person."""
    cmd = [
        sys.executable,
        "-m",
        "mlflow",
        "ui",
        "--backend-store-uri",
        env.tracking_uri,
        "--host",
        host,
        "--port",
        str(port),
        "--workers",
        "1",
    ]
    if env.registry_uri:
        cmd += ["--registry-store-uri", env.registry_uri]
    return cmd


def serve(config: Config, env: Environment, *, port: int, echo: Callable[[str], None] = print) -> int:
    """Run the UI in the foreground until interrupted; returns its exit code."""
    if env.tracking_uri.startswith(("http://", "https://")):
        echo(f"Environment '{env.name}' tracks to a server: open {env.tracking_uri} in a browser.")
        return 0
    echo(f"MLflow UI for {config.name} ({env.name}): http://127.0.0.1:{port}  (Ctrl+C to stop)")
    try:
        return subprocess.call(ui_command(env, port=port), cwd=config.root)
    except KeyboardInterrupt:
        return 0
    except OSError as exc:
        raise TrackingError(f"cannot start the MLflow UI ({exc}); is mlflow installed in this environment?") from exc
