"""`mlops run`, and a project's own command line, `python -m <package>.main`, which runs and reports the same way.

`Pipeline.main` imports this module when a project runs, so it imports no
other command: only the shared options and output.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import click

from mlops_template.cli.collection import command_collection
from mlops_template.cli.options import (
    run_options,
    verbose_option,
)
from mlops_template.cli.output import console, fail, show_step_logs, show_warnings
from mlops_template.errors import MlopsError
from mlops_template.tracking.connect import quiet_mlflow

if TYPE_CHECKING:
    from mlops_template.config.load import Config
    from mlops_template.pipeline.pipeline import Pipeline
    from mlops_template.pipeline.runner import PipelineResult, StepResult


@click.command()
@run_options
@click.option(
    "--project",
    type=click.Path(file_okay=False, path_type=Path),
    help="Project folder [default: the one holding the nearest mlops.toml].",
)
def run(
    steps: tuple[str, ...],
    environment: str | None,
    params: tuple[str, ...],
    pipeline_run: str | None,
    plan: str | None,
    supersede: bool,
    no_cache: bool,
    force: tuple[str, ...],
    project: Path | None,
) -> None:
    """Run the pipeline, or some steps, as one tracked pipeline run (joining KEY's with --pipeline-run)."""
    from mlops_template.config.load import load_config
    from mlops_template.pipeline.loader import load_pipeline

    config = load_config(project)
    run_and_report(
        load_pipeline(config),
        config,
        steps,
        environment,
        params,
        pipeline_run=pipeline_run,
        plan=plan,
        supersede=supersede,
        cache=not no_cache,
        force=force,
    )


def run_and_report(
    pipeline: Pipeline,
    config: Config,
    steps: Sequence[str],
    environment: str | None,
    params: Sequence[str],
    *,
    pipeline_run: str | None = None,
    plan: str | None = None,
    supersede: bool = False,
    cache: bool = True,
    force: Sequence[str] = (),
) -> PipelineResult:
    """Run the pipeline with command-line options, printing a line per step and where the run is tracked."""
    import time

    from rich.markup import escape

    from mlops_template.config.params import parse_overrides
    from mlops_template.pipeline.runner import run_pipeline

    out = console()
    started = time.perf_counter()
    stop_on_sigterm()
    quiet_mlflow()
    show_warnings()
    show_step_logs(config.package)

    def on_step(run: PipelineResult, step: StepResult | None) -> None:
        if step is None:
            verb = "joined" if run.joined else "started"
            out.print(
                f"[bold]{escape(config.name)}[/] pipeline run {run.run_id} on {escape(run.environment)} "
                f"({verb}, key {escape(run.key)}): " + " → ".join(run.planned)
            )
            return
        mark = "[green]✓[/]" if step.status == "FINISHED" else "[red]✗[/]"
        out.print(f"  {mark} {step.name:<16} {step.seconds:6.2f} s  {escape('; '.join(step.notes))}")

    result = run_pipeline(
        pipeline,
        config,
        steps=list(steps),
        environment=environment,
        overrides=parse_overrides(params),
        on_step=on_step,
        pipeline_run=pipeline_run,
        plan=[s.strip() for s in plan.split(",") if s.strip()] if plan else None,
        supersede=supersede,
        cache=cache,
        force=list(force),
    )
    _print_where(result, started)
    return result


def stop_on_sigterm() -> None:
    """End on SIGTERM (a pod being stopped, a scheduler's timeout) as on Ctrl+C: the step's run is marked FAILED.

    Python's default is to die at once, which would leave the attempt RUNNING
    until a retry finds its lease lapsed.
    """
    import signal
    import threading

    def stop(signum, frame):
        raise SystemExit(128 + signum)

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, stop)


def _print_where(result: PipelineResult, started: float) -> None:
    import time

    from rich.markup import escape

    from mlops_template.tracking.connect import display_uri

    out = console()
    uri = display_uri(result.tracking_uri)
    out.print(f"Finished in {time.perf_counter() - started:.1f} s; tracked in {escape(uri)}")
    runs_page = f"#/experiments/{result.experiment_id}/runs"
    if uri.startswith(("http://", "https://")):
        out.print(f"See it: {uri.rstrip('/')}/{runs_page}")
    else:
        out.print(f"See it: [bold]mlops ui[/], then http://127.0.0.1:5000/{runs_page}")


def run_command(pipeline: Pipeline, argv: Sequence[str] | None = None) -> None:
    """`python -m <package>.main`: the `run` command for one pipeline, with the same options and errors."""

    @click.command(context_settings={"help_option_names": ["-h", "--help"]})
    @run_options
    @verbose_option
    def command(steps, environment, params, pipeline_run, plan, supersede, no_cache, force, verbose):
        from mlops_template.config.load import load_config

        try:
            run_and_report(
                pipeline,
                load_config(),
                steps,
                environment,
                params,
                pipeline_run=pipeline_run,
                plan=plan,
                supersede=supersede,
                cache=not no_cache,
                force=force,
            )
        except MlopsError as exc:
            fail(exc, verbose=verbose)

    from mlops_template.redact import redacted_output

    with command_collection(), redacted_output():
        command.main(args=list(argv) if argv is not None else None, prog_name="main")
