"""`mlops new`, `mlops vendor`, `mlops upgrade` and `mlops dag`: make a project, vendor this library into it,
bring a newer template into it, write its DAG."""

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
    "--to",
    "to",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    metavar="WHEEL",
    help="The mlops-template wheel to upgrade to [default: the installed one].",
)
@click.option("--no-lock", is_flag=True, help="Leave uv.lock as it is.")
@project_option
def upgrade(to: Path | None, no_lock: bool, project: Path | None) -> None:
    """Merge a newer template into the project, keeping the team's edits; nothing is committed."""
    import sys

    from rich.markup import escape

    from mlops_template.config.load import load_config
    from mlops_template.scaffold.upgrade import upgrade as upgrade_project

    root = load_config(project).root
    done = upgrade_project(root, to=to, lock=not no_lock)
    out = console()
    if done.up_to_date:
        out.print(f"already up to date: the project's template is mlops-template {done.new}'s")
        return
    for note in done.notes:
        out.print(f"Note: {escape(note)}")
    out.print(f"Upgraded the template from mlops-template {done.old} to {done.new}: {len(done.changed)} files changed")
    for path in done.changed:
        mark = "[red]conflict[/]" if path in done.conflicts else "changed "
        out.print(f"  {mark}  {escape(path)}")
    if done.conflicts:
        out.print(
            f"{len(done.conflicts)} files hold conflict markers (<<<<<<< before updating … >>>>>>> after updating): "
            "keep what you want in each, then review with `git diff` and commit"
        )
        sys.exit(1)
    out.print("Review with `git diff`, then commit")


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
