"""`mlops serve`: the model an alias names, over HTTP, following the alias as it moves."""

from __future__ import annotations

from pathlib import Path

import click

from mlops_template.cli.options import env_option, load_environment, project_option
from mlops_template.cli.output import console


@click.command()
@env_option
@click.option("--alias", default="champion", show_default=True, help="The alias whose version is served.")
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    envvar="MLOPS_SERVE_HOST",
    help="Address to listen on (0.0.0.0: every one, as in the image) [env: MLOPS_SERVE_HOST].",
)
@click.option("--port", default=5001, show_default=True, type=int, help="Port to listen on.")
@click.option(
    "--poll", default=30.0, show_default=True, type=click.FloatRange(min=0.1), help="Seconds between alias checks."
)
@click.option(
    "--manifest",
    is_flag=True,
    help="Print a KServe InferenceService for the alias's current version (the environment's bucket) instead.",
)
@project_option
def serve(
    environment: str | None, alias: str, host: str, port: int, poll: float, manifest: bool, project: Path | None
) -> None:
    """Serve the alias's model version (MLflow's scoring server) and swap in the next when the alias moves."""
    from mlops_template.models import serving
    from mlops_template.tracking.connect import quiet_mlflow

    quiet_mlflow()
    config, env = load_environment(project, environment)
    if manifest:
        import yaml

        click.echo(yaml.safe_dump(serving.manifest(config, env, alias=alias), sort_keys=False), nl=False)
        return
    serving.serve(config, env, alias=alias, host=host, port=port, poll=poll, echo=console().print)
