"""`mlops serve`: the model an alias names, over HTTP, following the alias as it moves."""

from __future__ import annotations

from pathlib import Path

import click

from mlops_template.cli.options import env_option, load_environment, project_option
from mlops_template.cli.output import console


@click.command()
@env_option
@click.option("--alias", default="champion", show_default=True, help="The alias whose version is served.")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on (0.0.0.0: every one).")
@click.option("--port", default=5001, show_default=True, type=int, help="Port to listen on.")
@click.option(
    "--poll", default=30.0, show_default=True, type=click.FloatRange(min=0.1), help="Seconds between alias checks."
)
@project_option
def serve(environment: str | None, alias: str, host: str, port: int, poll: float, project: Path | None) -> None:
    """Serve the alias's model version (MLflow's scoring server) and swap in the next when the alias moves."""
    from mlops_template.models.serving import serve as serve_model
    from mlops_template.tracking.connect import quiet_mlflow

    quiet_mlflow()
    config, env = load_environment(project, environment)
    serve_model(config, env, alias=alias, host=host, port=port, poll=poll, echo=console().print)
