"""`mlops ui`: MLflow's UI over the environment's tracking store, until Ctrl+C."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from mlops_template.cli.options import env_option, load_environment, project_option
from mlops_template.cli.output import console


@click.command()
@env_option
@click.option("--port", default=5000, show_default=True, help="Port on 127.0.0.1.")
@project_option
def ui(environment: str | None, port: int, project: Path | None) -> None:
    """Open the MLflow UI on the environment's tracking store."""
    from mlops_template.tracking.ui import serve

    config, env = load_environment(project, environment)
    code = serve(config, env, port=port, echo=console().print)
    if code:
        sys.exit(code)
