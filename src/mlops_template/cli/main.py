"""The `mlops` command: a thin layer over the library, one function call per command.

Each command lives with its group's module (`cli.project`, `cli.run`,
`cli.lineage`, `cli.models`, `cli.data`, `cli.ui`); this module gathers them
under one group that prints an error as one line.
"""

from __future__ import annotations

import click

from mlops_template.cli.collection import command_collection
from mlops_template.cli.data import data
from mlops_template.cli.lineage import diff, reproduce, runs, show
from mlops_template.cli.models import models, promote
from mlops_template.cli.options import verbose_option
from mlops_template.cli.output import fail, show_warnings
from mlops_template.cli.project import dag, new, upgrade, vendor
from mlops_template.cli.run import run
from mlops_template.cli.serve import serve
from mlops_template.cli.ui import ui
from mlops_template.errors import MlopsError


def entry() -> None:
    """Console-script entry point: the `mlops` group, collecting garbage as `cli.collection` says."""
    with command_collection():
        main()


class _Group(click.Group):
    """Prints an MlopsError as one red line (traceback only with --verbose) and exits 1; every output redacted."""

    def invoke(self, ctx: click.Context):
        from mlops_template.redact import redacted_output

        with redacted_output():
            try:
                return super().invoke(ctx)
            except MlopsError as exc:
                fail(exc, verbose=bool(ctx.params.get("verbose")))


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@verbose_option
@click.version_option(package_name="mlops-template")
def main(verbose: bool) -> None:
    """Start ML projects with tracked pipelines, versioned data and a gated model registry."""
    show_warnings()


for _command in (new, vendor, upgrade, run, dag, ui, serve, runs, models, promote, show, diff, reproduce, data):
    main.add_command(_command)
