"""Options and output shared by the `mlops` commands and a project's own `python -m <package>.main`."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from mlops_template.config.load import Config, Environment

step_option = click.option(
    "--step", "-s", "steps", multiple=True, help="Run only this step (repeatable); default: all."
)
env_option = click.option(
    "--environment", "-e", help="Environment from mlops.toml [default: MLOPS_ENVIRONMENT or local]."
)
param_option = click.option(
    "-P",
    "--param",
    "params",
    multiple=True,
    metavar="KEY=VALUE",
    help="Override a step param (STEP.KEY=VALUE for one step).",
)
verbose_option = click.option("--verbose", is_flag=True, help="Show the full traceback of errors.")
pipeline_run_option = click.option(
    "--pipeline-run",
    metavar="KEY",
    envvar="MLOPS_PIPELINE_RUN",
    help="Join the pipeline run of this key, or start it [default: MLOPS_PIPELINE_RUN, else a new key].",
)
supersede_option = click.option(
    "--supersede",
    is_flag=True,
    help="A scheduler's retry: mark an earlier attempt of these steps still RUNNING under the key FAILED at once.",
)
plan_option = click.option(
    "--plan",
    metavar="S1,S2,...",
    help="Every step the keyed pipeline run will have [default: the whole pipeline with --pipeline-run].",
)

cache_option = click.option(
    "--no-cache", "no_cache", is_flag=True, help="Run every step, even one an earlier run could be reused for."
)
force_option = click.option(
    "--force-step",
    "force",
    multiple=True,
    metavar="STEP",
    help="Run this step even if an earlier run could be reused for it (repeatable).",
)


project_option = click.option("--project", type=click.Path(file_okay=False, path_type=Path), help="Project folder.")


def run_options(command):
    """The options of a pipeline run, shared by `mlops run` and a project's `python -m <package>.main`."""
    options = (
        step_option,
        env_option,
        param_option,
        pipeline_run_option,
        plan_option,
        supersede_option,
        cache_option,
        force_option,
    )
    for option in reversed(options):
        command = option(command)
    return command


def json_option(instead_of: str = "a table"):
    """`--json`, to print what the command shows as JSON instead of `instead_of`."""
    return click.option("--json", "as_json", is_flag=True, help=f"Print JSON instead of {instead_of}.")


def print_json(value: Any) -> None:
    """`value` as indented JSON on stdout; dates and paths as strings."""
    import json

    click.echo(json.dumps(value, indent=2, default=str))


def load_environment(project: Path | None, environment: str | None) -> tuple[Config, Environment]:
    """The project's config (nearest mlops.toml, or `project`'s) and the chosen environment."""
    from mlops_template.config.load import load_config

    config = load_config(project)
    return config, config.environment(environment)
