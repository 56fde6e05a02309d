"""MLflow's own UI, on loopback, over an environment's tracking store (the `mlops ui` command).

The store URIs reach MLflow through its variables, never on the command line:
anyone on the machine can read a process's arguments (`ps`), and a URI may
carry a password.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass

from mlops_template.config.load import Config, Environment
from mlops_template.errors import TrackingError
from mlops_template.redact import redact, redacted_repr


@redacted_repr
@dataclass(frozen=True)
class UiCommand:
    """The `mlflow ui` process to start: its arguments, and the variables added to its environment."""

    argv: list[str]
    variables: dict[str, str]


def ui_command(env: Environment, *, port: int, host: str = "127.0.0.1") -> UiCommand:
    """`mlflow ui` on the environment's tracking store and model registry: one worker, as it serves one person.

    The arguments name no store; the variables MLflow's server reads do.
    """
    argv = [sys.executable, "-m", "mlflow", "ui", "--host", host, "--port", str(port), "--workers", "1"]
    variables = {
        "MLFLOW_BACKEND_STORE_URI": env.tracking_uri,
        "MLFLOW_REGISTRY_STORE_URI": env.registry_uri or env.tracking_uri,
    }
    return UiCommand(argv, variables)


def serve(config: Config, env: Environment, *, port: int, echo: Callable[[str], None] = print) -> int:
    """Run the UI in the foreground until interrupted; returns its exit code."""
    if env.tracking_uri.startswith(("http://", "https://")):
        echo(f"Environment '{env.name}' tracks to a server: open {redact(env.tracking_uri)} in a browser.")
        return 0
    echo(f"MLflow UI for {config.name} ({env.name}): http://127.0.0.1:{port}  (Ctrl+C to stop)")
    try:
        command = ui_command(env, port=port)
        return subprocess.call(command.argv, cwd=config.root, env={**os.environ, **command.variables})
    except KeyboardInterrupt:
        return 0
    except OSError as exc:
        raise TrackingError(f"cannot start the MLflow UI ({exc}); is mlflow installed in this environment?") from exc
