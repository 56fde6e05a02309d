"""`mlops runs`, `mlops show`, `mlops diff` and `mlops reproduce`: the pipeline runs and their lineage.

Like every command they only parse, call one library function and print, for
people or as JSON. An error ends `show`, `diff` and `reproduce` with one line
and exit code 2 (`reproduce` uses 1 for a reproduction that came out different).
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import TYPE_CHECKING

import click

from mlops_template.cli.options import env_option, json_option, load_environment, print_json, project_option
from mlops_template.cli.output import console, fail
from mlops_template.errors import MlopsError
from mlops_template.tracking.connect import quiet_mlflow

if TYPE_CHECKING:
    from mlops_template.lineage.diff import RunDiff
    from mlops_template.lineage.reproduce import Reproduction
    from mlops_template.lineage.show import RunReport

ERROR_EXIT = 2
MISMATCH_EXIT = 1


def _errors_exit_2(func):
    """An MlopsError ends the command with its one line and exit code 2."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except MlopsError as exc:
            verbose = bool(click.get_current_context().find_root().params.get("verbose"))
            fail(exc, verbose=verbose, code=ERROR_EXIT)

    return wrapper


def _num(value: object) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _delta(value: float | None) -> str:
    return "" if value is None or value == 0 else f" ({value:+.4g})"


# -- runs ------------------------------------------------------------------------------------


@click.command()
@env_option
@click.option(
    "--limit", "-n", default=20, show_default=True, help="How many runs: the newest, or the best with --sort."
)
@click.option("--sort", "sort", metavar="METRIC", help="Best first by this training metric, over every matching run.")
@click.option("--status", help="Only runs in this state (FINISHED, FAILED, RUNNING, KILLED).")
@click.option("--step", metavar="STEP", help="Only pipeline runs that ran this step.")
@json_option()
@project_option
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

    from mlops_template.lineage.listing import list_runs

    config, env = load_environment(project, environment)
    found = list_runs(config, env, limit=limit, sort=sort, status=status, step=step)
    if as_json:
        print_json([r.to_json() for r in found])
        return
    metric = sort or config.model_in(env.name).gate.metric
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


# -- show ------------------------------------------------------------------------------------


@click.command()
@click.argument("run", metavar="RUN")
@env_option
@project_option
@json_option("text")
@_errors_exit_2
def show(run: str, environment: str | None, project: Path | None, as_json: bool) -> None:
    """One pipeline run (RUN: id, prefix, `latest`, `champion`): steps, data, code, gate and model."""
    from mlops_template.lineage.show import describe

    config, env = load_environment(project, environment)
    report = describe(config, env, run)
    if as_json:
        print_json(report.to_json())
        return
    _print_report(report)


def _print_report(r: RunReport) -> None:
    from rich.markup import escape

    out = console()
    out.print(f"[bold]pipeline run {r.run_id}[/]  key {escape(r.key)}  {r.status}  {r.started}  env {r.environment}")
    if r.reproduces:
        out.print(f"  reproduces run {r.reproduces}")
    c = r.code
    dirty = {"true": f", dirty (diff {c['diff']} bytes)", "false": ", clean"}.get(c["dirty"], ", dirty unknown")
    out.print(f"  code      commit {c['commit']}{dirty}")
    out.print(f"  packages  {c['packages'] or 'not recorded'}  {c['python'] or ''}  {c['platform'] or ''}")
    for s in r.steps:
        mark = "[green]✓[/]" if s.status == "FINISHED" else "[yellow]…[/]" if s.status == "RUNNING" else "[red]✗[/]"
        here = "  [bold]◀ named[/]" if s.name == r.selected_step else ""
        seconds = f"{s.seconds:.1f} s" if s.seconds is not None else "—"
        tries = f", {s.attempts} attempts" if s.attempts > 1 else ""
        out.print(f"{mark} [bold]{escape(s.name)}[/]  {s.status} {seconds}{tries}  run {s.run_id}{here}")
        if s.cached_from:
            out.print(f"    cached   reused run {s.cached_from}: its outputs, metrics and model, not run again")
        if s.params:
            out.print("    params   " + escape(", ".join(f"{k}={v}" for k, v in s.params.items())))
        if s.metrics:
            out.print("    metrics  " + ", ".join(f"{k}={_num(v)}" for k, v in s.metrics.items()))
        for label, refs in (("read", s.reads), ("wrote", s.writes)):
            for ref in refs:
                rows = f"{ref.rows:,} rows" if ref.rows is not None else "? rows"
                out.print(f"    {label:<8} {escape(ref.name)}:{ref.id}  {rows}  {escape(ref.uri)}")
        for dataset, q in s.queries.items():
            params = ", ".join(f"{k}={v}" for k, v in q.get("params", {}).items()) or "no params"
            line = f"{q.get('file')} (sha256 {str(q.get('sha256'))[:12]}) on '{q.get('connection')}', {params}"
            out.print(f"    query    {escape(dataset)} ← {escape(line)}")
        if s.gate:
            out.print(f"    gate     {s.gate}: {escape(s.gate_reason or '')}")
        if s.model_version:
            out.print(f"    model    used v{s.model_version}")
    m = r.model
    if m is None:
        out.print("model: none registered by this run")
        return
    aliases = f" ({', '.join(m.aliases)})" if m.aliases else ""
    out.print(f"model {escape(m.name)} v{m.version}{aliases}: {m.registry_uri} in {escape(m.registry)}")
    out.print(f"  trained on {escape(m.training_data)}")
    out.print(f"  stored at  {escape(m.storage_uri)}  (exported); artifacts {escape(m.source)}")


# -- diff ------------------------------------------------------------------------------------


@click.command()
@click.argument("run_a", metavar="RUN_A")
@click.argument("run_b", metavar="RUN_B")
@env_option
@project_option
@json_option("text")
@_errors_exit_2
def diff(run_a: str, run_b: str, environment: str | None, project: Path | None, as_json: bool) -> None:
    """What differs from RUN_A to RUN_B: data, code, params, metrics, packages, environment."""
    from mlops_template.lineage.diff import compare

    config, env = load_environment(project, environment)
    result = compare(config, env, run_a, run_b)
    if as_json:
        print_json(result.to_json())
        return
    _print_diff(result)


def _print_diff(d: RunDiff) -> None:
    from rich.markup import escape

    out = console()
    out.print(f"[bold]A[/] {d.a.run_id} ({d.a.started})  →  [bold]B[/] {d.b.run_id} ({d.b.started})")
    headline = [c for c in d.metrics if c.name == d.metric and (c.a is not None or c.b is not None)]
    for c in headline:
        out.print(f"{escape(c.step or '')} {d.metric}: {_num(c.a)} → {_num(c.b)}{_delta(c.delta)}")
    out.print("[bold]data[/]")
    for ch in d.data:
        if ch.same:
            out.print(f"  = {escape(ch.name)}:{ch.a}")
            continue
        out.print(f"  [yellow]~ {escape(ch.name)}[/]: {ch.a} → {ch.b}")
        if ch.summary is None:
            out.print(f"      not compared: {escape(ch.problem or '')}")
            continue
        s = ch.summary
        out.print(f"      rows {s['rows_a']:,} → {s['rows_b']:,}: {s['only_in_a']:,} removed, {s['only_in_b']:,} added")
        for label, key in (("added", "columns_added"), ("removed", "columns_removed"), ("retyped", "columns_retyped")):
            if s[key]:
                out.print(f"      columns {label}: {escape(', '.join(s[key]))}")
        if s["drifted"]:
            out.print(f"      drifted: {escape(', '.join(s['drifted']))}")
    if not d.data:
        out.print("  no dataset used by both runs")
    code = d.code
    out.print("[bold]code[/]")
    same = "same commit" if code.commit_a == code.commit_b else "commits differ"
    out.print(f"  {code.commit_a[:12]} (dirty {code.dirty_a}) → {code.commit_b[:12]} (dirty {code.dirty_b}): {same}")
    if code.files:
        out.print("  files changed: " + escape(", ".join(f"{st} {p}" for st, p in code.files)))
    if code.problem:
        out.print(f"  files not compared: {escape(code.problem)}")
    for label, files in (("A", code.uncommitted_a), ("B", code.uncommitted_b)):
        if files:
            out.print(f"  uncommitted in {label}: {escape(', '.join(files))}")
    out.print("[bold]params[/]")
    for c in d.params:
        out.print(f"  ~ {escape(c.step or '')}.{escape(c.name)}: {escape(_num(c.a))} → {escape(_num(c.b))}")
    if not d.params:
        out.print("  same")
    out.print("[bold]metrics[/]")
    for c in d.metrics:
        out.print(f"  {escape(c.step or '')}.{escape(c.name)}: {_num(c.a)} → {_num(c.b)}{_delta(c.delta)}")
    out.print("[bold]packages[/]")
    if d.packages is None:
        out.print("  not recorded by both runs")
    else:
        for c in d.packages:
            out.print(f"  ~ {escape(c.name)}: {c.a or '(none)'} → {c.b or '(none)'}")
        if not d.packages:
            out.print("  same")
    out.print("[bold]environment[/]")
    for c in d.environment:
        out.print(f"  ~ {c.name}: {escape(_num(c.a))} → {escape(_num(c.b))}")
    if not d.environment:
        out.print("  same")


# -- reproduce -------------------------------------------------------------------------------


@click.command()
@click.argument("run", metavar="RUN")
@click.option("--step", "-s", "steps", multiple=True, help="Reproduce only this step (repeatable); default: all.")
@click.option(
    "--tolerance", type=float, default=0.0, show_default=True, help="Largest absolute metric difference that matches."
)
@click.option("--register", is_flag=True, help="Register a model that passes the gate (default: nothing registered).")
@env_option
@project_option
@json_option("text")
@_errors_exit_2
def reproduce(
    run: str,
    steps: tuple[str, ...],
    tolerance: float,
    register: bool,
    environment: str | None,
    project: Path | None,
    as_json: bool,
) -> None:
    """Re-run RUN from its commit, snapshots and params; compare every metric and output (exit 1 if any differ)."""
    import sys

    from rich.markup import escape

    from mlops_template.cli.output import show_step_logs
    from mlops_template.lineage.reproduce import reproduce as reproduce_run

    config, _ = load_environment(project, environment)
    quiet_mlflow()
    out = console(stderr=as_json)
    show_step_logs(config.package)

    def on_step(result, step) -> None:
        if step is None:
            out.print(f"reproducing run in pipeline run {result.run_id}: " + " → ".join(result.planned))
            return
        mark = "✓" if step.status == "FINISHED" else "✗"
        out.print(f"  {mark} {step.name:<16} {step.seconds:6.2f} s  {escape('; '.join(step.notes))}")

    done = reproduce_run(
        config, run, environment=environment, steps=steps, tolerance=tolerance, register=register, on_step=on_step
    )
    if as_json:
        print_json(done.to_json())
    else:
        _print_reproduction(done, escape)
    if not done.matched:
        sys.exit(MISMATCH_EXIT)


def _print_reproduction(r: Reproduction, escape) -> None:
    out = console()
    diff = " with its recorded uncommitted diff" if r.applied_diff else ""
    out.print(f"run {r.original} reproduced as {r.run_id} from commit {r.commit[:12]}{diff}")
    for c in r.checks:
        mark = "[green]match[/]   " if c.match else "[red]mismatch[/]"
        out.print(f"  {mark} {escape(c.step)} {c.kind} {escape(c.name)}: {_num(c.original)} → {_num(c.reproduced)}")
    for name, recorded, installed in r.packages:
        out.print(
            f"  [yellow]package {escape(name)}: recorded {recorded or '(none)'}, installed {installed or '(none)'}[/]"
        )
    matched = sum(c.match for c in r.checks)
    verdict = "[green]reproduced[/]" if r.matched else "[red]not reproduced[/]"
    out.print(f"{verdict}: {matched} of {len(r.checks)} values match")
