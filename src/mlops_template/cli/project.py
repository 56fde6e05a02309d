"""`mlops new`, `mlops vendor` and `mlops dag`: make a project, vendor this library into it, write its DAG."""

from __future__ import annotations

from pathlib import Path

import click

from mlops_template.cli.options import project_option
from mlops_template.cli.output import console


@click.command()
@click.argument("name")
@click.option(
    "--directory", "-d", type=click.Path(file_okay=False, path_type=Path), help="Target folder [default: ./NAME]."
)
@click.option("--package", "-p", help="Python package name [default: NAME with '-' as '_'].")
@click.option("--no-lock", is_flag=True, help="Write no uv.lock (it needs a package registry).")
def new(name: str, directory: Path | None, package: str | None, no_lock: bool) -> None:
    """Render a new project NAME, ready to run (`cd NAME && mlops run`)."""
    import shlex

    from rich.markup import escape

    from mlops_template.scaffold.new import new_project

    target = new_project(name, directory=directory, package=package, lock=not no_lock)
    out = console()
    out.print(f"Created project [bold]{name}[/] in {target}")
    out.print(f"Next: [bold]cd {escape(shlex.quote(str(target)))} && mlops run[/]")  # as a shell reads it


@click.command()
@click.option("--no-lock", is_flag=True, help="Leave uv.lock as it is.")
@project_option
def vendor(no_lock: bool, project: Path | None) -> None:
    """Put this mlops-template into the project's vendor/ and lock the project to it (after an upgrade)."""
    from mlops_template.config.load import load_config
    from mlops_template.scaffold.vendor import vendor_library

    root = load_config(project).root
    done = vendor_library(root, lock=not no_lock)
    was = f" (was {done.previous})" if done.previous and done.previous != done.version else ""
    console().print(f"Vendored {done.wheel.relative_to(root)}{was}" + ("; updated uv.lock" if done.locked else ""))
    console().print("Commit vendor/, pyproject.toml and uv.lock")


@click.command()
@click.option(
    "--environment",
    "-e",
    help="Environment the steps run against [default: [dag] environment, else dev; "
    "with --local: MLOPS_ENVIRONMENT or local].",
)
@click.option(
    "--image", metavar="REPOSITORY:TAG", help="A fixed image instead of [dag] repository and the tag Variable."
)
@click.option(
    "--output", "-o", type=click.Path(dir_okay=False, path_type=Path), help="DAG file [default: dags/<project>.py]."
)
@click.option("--local", is_flag=True, help="Each step as a subprocess of this interpreter, not a pod.")
@click.option("--force", is_flag=True, help="Overwrite a DAG file edited by hand.")
@project_option
def dag(
    environment: str | None, image: str | None, output: Path | None, local: bool, force: bool, project: Path | None
) -> None:
    """Write the Airflow DAG from mlops.toml: one task per step, one pipeline run per DAG run."""
    from mlops_template.config.load import load_config
    from mlops_template.pipeline.loader import load_pipeline
    from mlops_template.scheduler.airflow import write_dag

    config = load_config(project)
    if local and image:
        raise click.UsageError("--image is for pods; --local runs the steps in this interpreter")
    result = write_dag(
        config,
        load_pipeline(config).names,
        environment=environment,
        image=image,
        output=output,
        local=local,
        force=force,
    )
    verb = "wrote" if result.written else "unchanged:"
    console().print(f"{verb} {result.path}", markup=False)
