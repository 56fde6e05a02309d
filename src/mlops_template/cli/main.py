"""The `mlops` command: a thin layer over the library, one function call per command."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from mlops_template.cli.output import console, fail, show_warnings, skip_final_gc
from mlops_template.cli.run import (
    env_option,
    param_option,
    pipeline_run_option,
    plan_option,
    run_and_report,
    step_option,
    supersede_option,
    verbose_option,
)
from mlops_template.config.environ import scoped
from mlops_template.errors import MlopsError
from mlops_template.tracking.connect import quiet_mlflow


def entry() -> None:
    """Console-script entry point: the `mlops` group, then a fast exit."""
    try:
        main()
    finally:
        skip_final_gc()


class _Group(click.Group):
    """Prints an MlopsError as one red line (traceback only with --verbose) and exits 1."""

    def invoke(self, ctx: click.Context):
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


@main.command()
@click.argument("name")
@click.option(
    "--directory", "-d", type=click.Path(file_okay=False, path_type=Path), help="Target folder [default: ./NAME]."
)
@click.option("--package", "-p", help="Python package name [default: NAME with '-' as '_'].")
@click.option("--no-lock", is_flag=True, help="Write no uv.lock (it needs a package registry).")
def new(name: str, directory: Path | None, package: str | None, no_lock: bool) -> None:
    """Render a new project NAME, ready to run (`cd NAME && mlops run`)."""
    from mlops_template.scaffold.new import new_project

    target = new_project(name, directory=directory, package=package, lock=not no_lock)
    out = console()
    out.print(f"Created project [bold]{name}[/] in {target}")
    out.print(f"Next: [bold]cd {target} && mlops run[/]")


@main.command()
@click.option("--no-lock", is_flag=True, help="Leave uv.lock as it is.")
@click.option("--project", type=click.Path(file_okay=False, path_type=Path), help="Project folder.")
def vendor(no_lock: bool, project: Path | None) -> None:
    """Put this mlops-template into the project's vendor/ and lock the project to it (after an upgrade)."""
    from mlops_template.config.load import load_config
    from mlops_template.scaffold.vendor import vendor_library

    root = load_config(project).root
    done = vendor_library(root, lock=not no_lock)
    was = f" (was {done.previous})" if done.previous and done.previous != done.version else ""
    console().print(f"Vendored {done.wheel.relative_to(root)}{was}" + ("; updated uv.lock" if done.locked else ""))
    console().print("Commit vendor/, pyproject.toml and uv.lock")


@main.command()
@step_option
@env_option
@param_option
@pipeline_run_option
@plan_option
@supersede_option
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
    )


@main.command()
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
@click.option("--project", type=click.Path(file_okay=False, path_type=Path), help="Project folder.")
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


@main.command()
@env_option
@click.option("--port", default=5000, show_default=True, help="Port on 127.0.0.1.")
@click.option("--project", type=click.Path(file_okay=False, path_type=Path), help="Project folder.")
def ui(environment: str | None, port: int, project: Path | None) -> None:
    """Open the MLflow UI on the environment's tracking store."""
    from mlops_template.cli.ui import serve
    from mlops_template.config.load import load_config

    config = load_config(project)
    code = serve(config, config.environment(environment), port=port, echo=console().print)
    if code:
        sys.exit(code)


@main.command()
@env_option
@click.option(
    "--limit", "-n", default=20, show_default=True, help="How many runs: the newest, or the best with --sort."
)
@click.option("--sort", "sort", metavar="METRIC", help="Best first by this training metric, over every matching run.")
@click.option("--status", help="Only runs in this state (FINISHED, FAILED, RUNNING, KILLED).")
@click.option("--step", metavar="STEP", help="Only pipeline runs that ran this step.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.option("--project", type=click.Path(file_okay=False, path_type=Path), help="Project folder.")
def runs(
    environment: str | None,
    limit: int,
    sort: str | None,
    status: str | None,
    step: str | None,
    as_json: bool,
    project: Path | None,
) -> None:
    """List pipeline runs: when, where, which code, training metrics, gate, model version."""
    from rich.table import Table

    from mlops_template.config.load import load_config
    from mlops_template.lineage.listing import list_runs

    config = load_config(project)
    env = config.environment(environment)
    found = list_runs(config, env, limit=limit, sort=sort, status=status, step=step)
    if as_json:
        _print_json([r.to_json() for r in found])
        return
    metric = sort or config.model.gate.metric
    table = Table(box=None)
    table.add_column("run", no_wrap=True, min_width=32)  # whole ids: they are what other commands take
    for heading in ("key", "started (UTC)", "status", "env", "steps", "commit", metric, "gate", "model"):
        table.add_column(heading, no_wrap=True)
    for run in found:
        commit = run.git_commit[:8] + ("+dirty" if run.git_dirty == "true" else "")
        value = run.metrics.get(metric)
        table.add_row(
            run.run_id,
            run.key,
            f"{run.started:%Y-%m-%d %H:%M:%S}",
            run.status,
            run.environment,
            ",".join(run.steps),
            commit,
            "" if value is None else f"{value:.4f}",
            run.gate or "",
            f"v{run.model_version}" if run.model_version else "",
        )
    console().print(table)


def _connected(project: Path | None, environment: str | None):
    """The project's config and chosen environment, with MLflow pointed at its stores."""
    from mlops_template.config.load import load_config
    from mlops_template.tracking.connect import connect

    config = load_config(project)
    env = config.environment(environment)
    quiet_mlflow()
    connect(config, env)
    return config, env


@main.command()
@env_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.option("--project", type=click.Path(file_okay=False, path_type=Path), help="Project folder.")
@scoped
def models(environment: str | None, as_json: bool, project: Path | None) -> None:
    """List the registered versions of the project's model and their aliases."""
    from dataclasses import asdict

    from rich.table import Table

    from mlops_template.config.environ import scope
    from mlops_template.config.load import load_config
    from mlops_template.models.registry import list_versions
    from mlops_template.tracking.failures import store_errors
    from mlops_template.tracking.reader import open_reader
    from mlops_template.tracking.tags import TAG_DATA_PREFIX, TAG_TRAINING_DATA

    config = load_config(project)
    env = config.environment(environment)
    metric = config.model.gate.metric
    table = Table("version", "aliases", metric, "run", "trained on", "other data", box=None)
    with scope(), store_errors(env, registry=True):
        versions = list_versions(open_reader(config, env)[0], config.model.name, metric=metric)
    if as_json:
        _print_json([{"name": config.model.name, **asdict(v)} for v in versions])
        return
    for v in versions:
        training = v.tags.get(TAG_TRAINING_DATA, "")
        trained_on = set(training.split(",")) if training else set()
        other = ", ".join(
            ref
            for k, val in sorted(v.tags.items())
            if k.startswith(TAG_DATA_PREFIX) and (ref := f"{k.removeprefix(TAG_DATA_PREFIX)}:{val}") not in trained_on
        )
        table.add_row(
            f"v{v.version}",
            ", ".join(v.aliases),
            "" if v.metric is None else f"{v.metric:.4f}",
            v.run_id or "",
            training.replace(",", ", "),
            other,
        )
    console().print(f"[bold]{config.model.name}[/]")
    console().print(table)


@main.command()
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
@click.option("--project", type=click.Path(file_okay=False, path_type=Path), help="Project folder.")
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


REFUSED = 3  # `mlops promote --to`'s exit status when the target's gate refuses (errors exit 1, usage 2)


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


def _add_lineage_commands() -> None:
    from mlops_template.cli.lineage import diff, reproduce, show

    for command in (show, diff, reproduce):
        main.add_command(command)


_add_lineage_commands()


@main.group()
def data() -> None:
    """Dataset snapshots: list, inspect, compare, add and fetch versions."""


def _snapshots(project: Path | None, environment: str | None, *, check: bool = False):
    from mlops_template.config.load import load_config
    from mlops_template.data.snapshots import open_snapshots

    return open_snapshots(load_config(project), environment, check=check)


_project_option = click.option("--project", type=click.Path(file_okay=False, path_type=Path), help="Project folder.")
_json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")


def _print_json(value) -> None:
    import json

    click.echo(json.dumps(value, indent=2, default=str))


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n} B"


@data.command("ls")
@click.argument("name", required=False)
@env_option
@_project_option
@_json_option
def data_ls(name: str | None, environment: str | None, project: Path | None, as_json: bool) -> None:
    """List snapshots, newest first (of every dataset, or of NAME)."""
    from rich.table import Table

    found = _snapshots(project, environment).list(name)
    if as_json:
        _print_json([s.to_json() for s in found])
        return
    table = Table("dataset", "id", "rows", "size", "created (UTC)", "step", "run", box=None)
    for s in found:
        table.add_row(
            s.name,
            s.id,
            f"{s.rows:,}",
            _size(s.bytes),
            s.created_at[:19].replace("T", " "),
            s.step or "",
            s.run_id or (s.source and "added") or "",
        )
    console().print(table if found else "No snapshots yet: `mlops run` or `mlops data add` stores some.")


@data.command("show")
@click.argument("ref", metavar="ID")
@env_option
@_project_option
@_json_option
def data_show(ref: str, environment: str | None, project: Path | None, as_json: bool) -> None:
    """One snapshot's manifest: size, rows, columns and their statistics (ID, prefix, NAME:ID or NAME)."""
    from rich.markup import escape
    from rich.table import Table

    store = _snapshots(project, environment)
    s = store.resolve(ref)
    if as_json:
        _print_json(s.to_json() | {"uri": store.uri(s)})
        return
    out = console()
    out.print(f"[bold]{escape(s.ref)}[/]  {escape(store.uri(s))}")
    out.print(f"  digest   blake3:{s.digest}")
    out.print(f"  {s.format}, {_size(s.bytes)}, {s.rows:,} rows, {len(s.columns)} columns; created {s.created_at}")
    origin = f"step {s.step} in run {s.run_id}" if s.run_id else f"added from {s.source}" if s.source else "unknown"
    out.print(f"  made by  {escape(origin)}")
    table = Table("column", "dtype", "nulls", "min", "max", "mean", "std", "top values", box=None)
    for c in s.columns:
        top = ", ".join(f"{v} ({n:,})" for v, n in c.get("top", [])[:5])
        table.add_row(
            escape(c["name"]),
            c["dtype"],
            f"{c['nulls']:,}",
            *(_num(c.get(k)) for k in ("min", "max", "mean", "std")),
            escape(top),
        )
    out.print(table)


def _num(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


@data.command("diff")
@click.argument("a", metavar="A")
@click.argument("b", metavar="B")
@click.option("--limit", "-n", default=10, show_default=True, help="How many differing rows to show per side.")
@env_option
@_project_option
@_json_option
def data_diff(a: str, b: str, limit: int, environment: str | None, project: Path | None, as_json: bool) -> None:
    """What differs from snapshot A to B: schema, rows, and per-column drift."""
    from mlops_template.data.diff import diff_snapshots

    result = diff_snapshots(_snapshots(project, environment), a, b, limit=limit)
    if as_json:
        _print_json(result.to_json())
        return
    _print_diff(result)


def _print_diff(d) -> None:
    from rich.markup import escape
    from rich.table import Table

    out = console()
    out.print(f"[bold]{escape(d.a)}[/] → [bold]{escape(d.b)}[/]")
    if d.identical and not d.drifted:
        out.print("  identical rows and schema")
    for name, dtype in d.added:
        out.print(f"  [green]+ column {escape(name)}[/] ({dtype})")
    for name, dtype in d.removed:
        out.print(f"  [red]- column {escape(name)}[/] ({dtype})")
    for name, before, after in d.retyped:
        out.print(f"  [yellow]~ column {escape(name)}[/]: {before} → {after}")
    out.print(
        f"  rows {d.rows_a:,} → {d.rows_b:,}: {d.only_in_a:,} only in A, {d.only_in_b:,} only in B "
        f"(whole rows compared on {len(d.compared_on)} shared columns)"
    )
    for label, rows, total in (("A", d.rows_only_in_a, d.only_in_a), ("B", d.rows_only_in_b, d.only_in_b)):
        if rows:
            shown = f"first {len(rows)} of {total:,}" if total > len(rows) else f"{total:,}"
            table = Table(*map(str, rows[0]), box=None, title=f"rows only in {label} ({shown})", title_justify="left")
            for row in rows:
                table.add_row(*(_num(v) for v in row.values()))
            out.print(table)
    table = Table(
        "column", "kind", "nulls A→B", "mean A→B", "std A→B", "shift σ", "KS", "PSI", "share shift", "", box=None
    )
    for c in d.columns:
        table.add_row(
            escape(c.name),
            c.kind,
            f"{c.null_rate_a:.1%} → {c.null_rate_b:.1%}",
            f"{_num(c.mean_a)} → {_num(c.mean_b)}" if c.kind == "numeric" else "",
            f"{_num(c.std_a)} → {_num(c.std_b)}" if c.kind == "numeric" else "",
            _num(c.mean_shift),
            _num(c.ks),
            _num(c.psi),
            _num(c.share_shift),
            "[red]drift[/]" if c.drifted else "",
        )
    out.print(table)


@data.command("add")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--name", required=True, help="Dataset name the file becomes a version of.")
@env_option
@_project_option
def data_add(file: Path, name: str, environment: str | None, project: Path | None) -> None:
    """Store a CSV or parquet FILE as a snapshot of dataset NAME and make it the current version."""
    stored = _snapshots(project, environment, check=True).add_file(file, name)
    s = stored.snapshot
    state = "stored" if stored.written else "unchanged, already stored"
    console().print(f"{s.ref}  {s.rows:,} rows, {_size(s.bytes)} ({state}); current version of '{s.name}'")


@data.command("get")
@click.argument("ref", metavar="ID")
@click.option(
    "--to",
    "to",
    type=click.Path(),
    help="File or folder (an existing one, or ending in /) [default: ./NAME-ID.FORMAT].",
)
@env_option
@_project_option
def data_get(ref: str, to: str | None, environment: str | None, project: Path | None) -> None:
    """Copy a snapshot to a local file, verified against its id."""
    store = _snapshots(project, environment)
    snapshot = store.resolve(ref)
    target = store.get(snapshot, to)
    console().print(f"{snapshot.ref} → {target} (verified)")
