"""`mlops models` and `mlops promote`: the registered versions of the project's model, and moving its aliases."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from mlops_template.cli.options import env_option, json_option, load_environment, print_json, project_option
from mlops_template.cli.output import console
from mlops_template.config.environ import scoped
from mlops_template.tracking.connect import quiet_mlflow

REFUSED = 3  # `mlops promote --to`'s exit status when the target's gate refuses (errors exit 1, usage 2)


@click.command()
@env_option
@json_option()
@project_option
@scoped
def models(environment: str | None, as_json: bool, project: Path | None) -> None:
    """List the registered versions of the project's model and their aliases."""
    from dataclasses import asdict

    from rich.table import Table

    from mlops_template.config.environ import scope
    from mlops_template.models.journal import settle_on_contact
    from mlops_template.models.registry import list_versions
    from mlops_template.tracking.failures import store_errors
    from mlops_template.tracking.reader import open_reader

    config, env = load_environment(project, environment)
    metric = config.model_in(env.name).gate.metric
    with scope(), store_errors(env, registry=True):
        settle_on_contact(config, env)
        versions = list_versions(open_reader(config, env)[0], config.model.name, metric=metric)
    if as_json:
        print_json([{"name": config.model.name, **asdict(v)} for v in versions])
        return
    table = Table("version", "aliases", metric, "run", "trained on", "other data", box=None)
    for v in versions:
        table.add_row(
            f"v{v.version}",
            ", ".join(v.aliases),
            "" if v.metric is None else f"{v.metric:.4f}",
            v.run_id or "",
            ", ".join(v.training_data),
            ", ".join(v.other_data),
        )
    console().print(f"[bold]{config.model.name}[/]")
    console().print(table)


@click.command()
@click.argument("version")
@click.option("--alias", default="champion", show_default=True, help="Alias to move.")
@env_option
@click.option("--from", "source", metavar="E1", help="Environment to copy VERSION from (with --to).")
@click.option("--to", "target", metavar="E2", help="Environment to copy VERSION into; its gate decides.")
@click.option(
    "--evaluate",
    metavar="NAME",
    help="With --to: the target's dataset the gate scores [default: VERSION's held-out snapshot].",
)
@click.option("--dry-run", is_flag=True, help="With --to: check both environments and decide, writing nothing.")
@project_option
@scoped
def promote(
    version: str,
    alias: str,
    environment: str | None,
    source: str | None,
    target: str | None,
    evaluate: str | None,
    dry_run: bool,
    project: Path | None,
) -> None:
    """Point the champion (or --alias) at VERSION, e.g. to roll back; or copy VERSION --from E1 --to E2.

    Between environments, the version's files and the snapshots it was trained and checked on are copied,
    and the target's gate decides: exit status 3 when it refuses.
    """
    if source or target:
        _promote_between(version, alias, environment, source, target, evaluate, dry_run, project)
        return
    if evaluate or dry_run:
        from mlops_template.errors import ConfigError

        raise ConfigError("--evaluate and --dry-run go with --from E1 --to E2; add them, or drop the option")
    from mlops_template.models.registry import promote as promote_version
    from mlops_template.tracking.connect import client
    from mlops_template.tracking.failures import store_errors

    config, env = _connected(project, environment)
    version = version.removeprefix("v")
    with store_errors(env, registry=True):
        promote_version(client(), config.model.name, version, alias=alias)
    console().print(f"{config.model.name}: '{alias}' now points at v{version}")


def _promote_between(version, alias, environment, source, target, evaluate, dry_run, project) -> None:
    from rich.markup import escape

    from mlops_template.config.load import load_config
    from mlops_template.errors import ConfigError
    from mlops_template.models.promotion import promote_between

    if not (source and target):
        raise ConfigError("give both --from E1 and --to E2 (or neither, to move an alias in one environment)")
    if environment:
        raise ConfigError("--environment names one environment; with --from and --to, leave it out")
    config = load_config(project)
    quiet_mlflow()
    done = promote_between(
        config, version, source=source, target=target, alias=alias, evaluate=evaluate, dry_run=dry_run
    )
    out = console()
    what = f"{done.model} v{done.source_version} of {done.source}"
    if done.decision is None:
        out.print(f"{what} is {done.target}'s v{done.version} already, and '{done.alias}' points at it: nothing to do")
        return
    copied = ", ".join(done.copied) or "none"
    held = f" ({', '.join(done.present)} there already)" if done.present else ""
    files = "model files" if done.model_copied else "model files: none (copied before)"
    verb = "would copy" if done.dry_run else "copied"
    out.print(f"{what} → {done.target}: {verb} {files}; snapshots {copied}{held}")
    verdict = "passed" if done.decision.passed else "refused"
    out.print(f"{done.target}'s gate {verdict} on {done.gate_data}: {escape(done.decision.reason)}")
    if done.dry_run:
        out.print(f"dry run: nothing was written to {done.target} ({done.seconds:.1f} s)")
    elif done.passed:
        out.print(f"{done.target}: {done.model} v{done.version}, '{done.alias}' points at it ({done.seconds:.1f} s)")
    else:
        out.print(f"{done.target}: nothing registered, '{done.alias}' unchanged ({done.seconds:.1f} s)")
    if not done.passed:
        sys.exit(REFUSED)


def _connected(project: Path | None, environment: str | None):
    """The project's config and chosen environment, with MLflow pointed at its stores."""
    from mlops_template.tracking.connect import connect

    config, env = load_environment(project, environment)
    quiet_mlflow()
    connect(config, env)
    return config, env
