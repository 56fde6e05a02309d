"""The `mlops` command: a thin layer over the library, one function call per command."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import click

from .errors import MlopsError

if TYPE_CHECKING:
    from .pipeline import Pipeline
    from .runner import PipelineResult, StepResult


def entry() -> None:
    """Console-script entry point: the `mlops` group, then a fast exit."""
    try:
        main()
    finally:
        _skip_final_gc()


def _skip_final_gc() -> None:
    """Spare the interpreter's final garbage collections over MLflow's, pandas' and
    scikit-learn's object graphs (about a second per command). Everything is
    written and closed by now, and atexit handlers still run.
    """
    import gc

    gc.freeze()


def _console(stderr: bool = False):
    import shutil

    from rich.console import Console

    # Piped output keeps whole lines (full run ids) instead of wrapping at 80 columns.
    width = None if sys.stdout.isatty() else max(shutil.get_terminal_size((160, 24)).columns, 160)
    return Console(stderr=stderr, highlight=False, soft_wrap=True, width=width)


class _Group(click.Group):
    """Prints an MlopsError as one red line (traceback only with --verbose) and exits 1."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except MlopsError as exc:
            _fail(exc, verbose=bool(ctx.params.get("verbose")))


def _fail(exc: MlopsError, *, verbose: bool) -> None:
    if verbose:
        import traceback

        traceback.print_exc()
    from rich.markup import escape

    _console(stderr=True).print(f"[bold red]Error:[/] {escape(str(exc))}", markup=True)
    sys.exit(1)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--verbose", is_flag=True, help="Show the full traceback of errors.")
@click.version_option(package_name="mlops-template")
def main(verbose: bool) -> None:
    """Start ML projects with tracked pipelines, versioned data and a gated model registry."""


@main.command()
@click.argument("name")
@click.option(
    "--directory", "-d", type=click.Path(file_okay=False, path_type=Path), help="Target folder [default: ./NAME]."
)
@click.option("--package", "-p", help="Python package name [default: NAME with '-' as '_'].")
def new(name: str, directory: Path | None, package: str | None) -> None:
    """Render a new project NAME, ready to run (`cd NAME && mlops run`)."""
    from .scaffold import new_project

    target = new_project(name, directory=directory, package=package)
    console = _console()
    console.print(f"Created project [bold]{name}[/] in {target}")
    console.print(f"Next: [bold]cd {target} && mlops run[/]")


_step_option = click.option(
    "--step", "-s", "steps", multiple=True, help="Run only this step (repeatable); default: all."
)
_env_option = click.option(
    "--environment", "-e", help="Environment from mlops.toml [default: MLOPS_ENVIRONMENT or local]."
)
_param_option = click.option(
    "-P",
    "--param",
    "params",
    multiple=True,
    metavar="KEY=VALUE",
    help="Override a step param (STEP.KEY=VALUE for one step).",
)


@main.command()
@_step_option
@_env_option
@_param_option
@click.option(
    "--project",
    type=click.Path(file_okay=False, path_type=Path),
    help="Project folder [default: the one holding the nearest mlops.toml].",
)
def run(steps: tuple[str, ...], environment: str | None, params: tuple[str, ...], project: Path | None) -> None:
    """Run the pipeline, or some steps, as one tracked pipeline run."""
    from .config import load_config
    from .project import load_pipeline

    config = load_config(project)
    _run(load_pipeline(config), config, steps, environment, params)


def _run(pipeline: Pipeline, config, steps, environment, params) -> PipelineResult:
    import time

    from rich.markup import escape

    from .params import parse_overrides
    from .runner import run_pipeline

    console = _console()
    started = time.perf_counter()
    _quiet_mlflow()
    _show_step_logs(config.package)

    def on_step(run: PipelineResult, step: StepResult | None) -> None:
        if step is None:
            console.print(
                f"[bold]{escape(config.name)}[/] pipeline run {run.run_id} on {escape(run.environment)}: "
                + " → ".join(run.planned)
            )
            return
        mark = "[green]✓[/]" if step.status == "FINISHED" else "[red]✗[/]"
        console.print(f"  {mark} {step.name:<16} {step.seconds:6.2f} s  {escape('; '.join(step.notes))}")

    result = run_pipeline(
        pipeline, config, steps=list(steps), environment=environment, overrides=parse_overrides(params), on_step=on_step
    )
    console.print(f"Finished in {time.perf_counter() - started:.1f} s; tracked in {escape(result.tracking_uri)}")
    runs_page = f"#/experiments/{result.experiment_id}/runs"
    if result.tracking_uri.startswith(("http://", "https://")):
        console.print(f"See it: {result.tracking_uri.rstrip('/')}/{runs_page}")
    else:
        console.print(f"See it: [bold]mlops ui[/], then http://127.0.0.1:5000/{runs_page}")
    return result


def _quiet_mlflow() -> None:
    """Keep MLflow's INFO chatter (table creation, …) off the terminal; our own lines say what happened."""
    import logging

    import mlflow  # noqa: F401  (configures its loggers on import, so adjust them after)

    logging.getLogger("mlflow").setLevel(logging.WARNING)
    # It warns that pip is missing from uv-made environments; requirements are pinned explicitly anyway.
    logging.getLogger("mlflow.utils.environment").setLevel(logging.ERROR)


def _show_step_logs(package: str) -> None:
    """Print what steps log through `ctx.log` (the project package's loggers) at INFO and above."""
    import logging

    class CurrentStderr(logging.StreamHandler):
        """Writes to whatever `sys.stderr` is at the time, so repeated runs in one process all show."""

        stream = property(lambda self: sys.stderr, lambda self, value: None)

    logger = logging.getLogger(package)
    if not any(isinstance(h, logging.StreamHandler) for h in logger.handlers):
        handler = CurrentStderr()
        handler.setFormatter(logging.Formatter("    %(name)s: %(message)s"))
        logger.addHandler(handler)
    if logger.level == logging.NOTSET:
        logger.setLevel(logging.INFO)


def run_command(pipeline: Pipeline, argv: Sequence[str] | None = None) -> None:
    """`python -m <package>.main`: the `run` command for one pipeline, with the same options and errors."""

    @click.command(context_settings={"help_option_names": ["-h", "--help"]})
    @_step_option
    @_env_option
    @_param_option
    @click.option("--verbose", is_flag=True, help="Show the full traceback of errors.")
    def command(steps, environment, params, verbose):
        from .config import load_config

        try:
            _run(pipeline, load_config(), steps, environment, params)
        except MlopsError as exc:
            _fail(exc, verbose=verbose)

    try:
        command.main(args=list(argv) if argv is not None else None, prog_name="main")
    finally:
        _skip_final_gc()


@main.command()
@_env_option
@click.option("--port", default=5000, show_default=True, help="Port on 127.0.0.1.")
@click.option("--project", type=click.Path(file_okay=False, path_type=Path), help="Project folder.")
def ui(environment: str | None, port: int, project: Path | None) -> None:
    """Open the MLflow UI on the environment's tracking store."""
    from .config import load_config
    from .ui import serve

    config = load_config(project)
    code = serve(config, config.environment(environment), port=port, echo=_console().print)
    if code:
        sys.exit(code)


@main.command()
@_env_option
@click.option("--limit", "-n", default=20, show_default=True, help="How many runs, newest first.")
@click.option("--project", type=click.Path(file_okay=False, path_type=Path), help="Project folder.")
def runs(environment: str | None, limit: int, project: Path | None) -> None:
    """List pipeline runs: when, where, which code, training metrics, gate, model version."""
    from rich.table import Table

    from .config import load_config
    from .runs import list_runs

    config = load_config(project)
    env = config.environment(environment)
    metric = config.model.gate.metric
    table = Table("run", "started (UTC)", "status", "env", "steps", "commit", metric, "gate", "model", box=None)
    for run in list_runs(config, env, limit=limit):
        commit = run.git_commit[:8] + ("+dirty" if run.git_dirty == "true" else "")
        value = run.metrics.get(metric)
        table.add_row(
            run.run_id,
            f"{run.started:%Y-%m-%d %H:%M:%S}",
            run.status,
            run.environment,
            ",".join(run.steps),
            commit,
            "" if value is None else f"{value:.4f}",
            run.gate or "",
            f"v{run.model_version}" if run.model_version else "",
        )
    _console().print(table)


def _connected(project: Path | None, environment: str | None):
    """The project's config, with MLflow pointed at the chosen environment's stores."""
    from .config import load_config
    from .tracking import connect

    config = load_config(project)
    connect(config, config.environment(environment))
    return config


@main.command()
@_env_option
@click.option("--project", type=click.Path(file_okay=False, path_type=Path), help="Project folder.")
def models(environment: str | None, project: Path | None) -> None:
    """List the registered versions of the project's model and their aliases."""
    from rich.table import Table

    from .registry import list_versions
    from .tracking import TAG_DATA_PREFIX, client

    config = _connected(project, environment)
    metric = config.model.gate.metric
    table = Table("version", "aliases", metric, "run", "data it was trained with", box=None)
    for v in list_versions(client(), config.model.name, metric=metric):
        data = ", ".join(
            f"{k.removeprefix(TAG_DATA_PREFIX)}={val}"
            for k, val in sorted(v.tags.items())
            if k.startswith(TAG_DATA_PREFIX)
        )
        table.add_row(
            f"v{v.version}", ", ".join(v.aliases), "" if v.metric is None else f"{v.metric:.4f}", v.run_id or "", data
        )
    _console().print(f"[bold]{config.model.name}[/]")
    _console().print(table)


@main.command()
@click.argument("version")
@click.option("--alias", default="champion", show_default=True, help="Alias to move.")
@_env_option
@click.option("--project", type=click.Path(file_okay=False, path_type=Path), help="Project folder.")
def promote(version: str, alias: str, environment: str | None, project: Path | None) -> None:
    """Point the champion (or --alias) at VERSION of the project's model, e.g. to roll back."""
    from .registry import promote as promote_version
    from .tracking import client

    config = _connected(project, environment)
    version = version.removeprefix("v")
    promote_version(client(), config.model.name, version, alias=alias)
    _console().print(f"{config.model.name}: '{alias}' now points at v{version}")
