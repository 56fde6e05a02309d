"""`mlops data`: dataset snapshots listed, shown, compared, added and fetched."""

from __future__ import annotations

from pathlib import Path

import click

from mlops_template.cli.options import env_option, json_option, print_json, project_option
from mlops_template.cli.output import console


@click.group()
def data() -> None:
    """Dataset snapshots: list, inspect, compare, add, fetch and verify versions."""


def _snapshots(project: Path | None, environment: str | None, *, check: bool = False):
    from mlops_template.config.load import load_config
    from mlops_template.data.snapshots import open_snapshots

    return open_snapshots(load_config(project), environment, check=check)


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n} B"


def _kind(s) -> str:
    """A snapshot's format as listed: `parquet`, `csv`, or `parquet ×4 parts` for a partitioned one."""
    if s.partitioned:
        count = len(s.partitions)
        return f"{s.format} ×{count} part{'s' if count != 1 else ''}"
    return s.format


@data.command("ls")
@click.argument("name", required=False)
@env_option
@project_option
@json_option()
def data_ls(name: str | None, environment: str | None, project: Path | None, as_json: bool) -> None:
    """List snapshots, newest first (of every dataset, or of NAME)."""
    from rich.table import Table

    found = _snapshots(project, environment, check=True).list(name)
    if as_json:
        print_json([s.to_json() for s in found])
        return
    table = Table("dataset", "id", "rows", "size", "format", "created (UTC)", "step", "run", box=None)
    for s in found:
        table.add_row(
            s.name,
            s.id,
            f"{s.rows:,}",
            _size(s.bytes),
            _kind(s),
            s.created_at[:19].replace("T", " "),
            s.step or "",
            s.run_id or (s.source and "added") or "",
        )
    console().print(table if found else "No snapshots yet: `mlops run` or `mlops data add` stores some.")


@data.command("show")
@click.argument("ref", metavar="ID")
@env_option
@project_option
@json_option()
def data_show(ref: str, environment: str | None, project: Path | None, as_json: bool) -> None:
    """One snapshot's manifest: size, rows, columns and their statistics (ID, prefix, NAME:ID or NAME)."""
    from rich.markup import escape
    from rich.table import Table

    store = _snapshots(project, environment)
    s = store.resolve(ref)
    if as_json:
        print_json(s.to_json() | {"uri": store.uri(s)})
        return
    out = console()
    out.print(f"[bold]{escape(s.ref)}[/]  {escape(store.uri(s))}")
    out.print(f"  digest   blake3:{s.digest}")
    layout = f"{s.format}, partitioned ({_kind(s).split('×', 1)[1]})" if s.partitioned else s.format
    out.print(f"  {layout}, {_size(s.bytes)}, {s.rows:,} rows, {len(s.columns)} columns; created {s.created_at}")
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
    if s.partitioned:
        _print_parts(s)


_PARTS_SHOWN = 20


def _print_parts(s) -> None:
    """A partitioned snapshot's parts: file, rows, size, digest (the first 20; `--json` has them all)."""
    from rich.markup import escape
    from rich.table import Table

    parts = s.partitions
    table = Table("part", "rows", "size", "digest", box=None)
    for part in parts[:_PARTS_SHOWN]:
        table.add_row(escape(part["file"]), f"{part['rows']:,}", _size(part["bytes"]), f"blake3:{part['digest']}")
    out = console()
    out.print(f"  {len(parts):,} part{'s' if len(parts) != 1 else ''}:")
    out.print(table)
    if len(parts) > _PARTS_SHOWN:
        out.print(f"  … and {len(parts) - _PARTS_SHOWN:,} more (`--json` lists every part)")


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
@project_option
@json_option()
def data_diff(a: str, b: str, limit: int, environment: str | None, project: Path | None, as_json: bool) -> None:
    """What differs from snapshot A to B: schema, rows, and per-column drift (not yet for partitioned snapshots)."""
    from mlops_template.data.diff import diff_snapshots

    result = diff_snapshots(_snapshots(project, environment), a, b, limit=limit)
    if as_json:
        print_json(result.to_json())
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
@project_option
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
    help="File or folder (an existing one, or ending in /) [default: ./NAME-ID.FORMAT; a partitioned snapshot: "
    "a folder of its parts, ./NAME-ID/].",
)
@env_option
@project_option
def data_get(ref: str, to: str | None, environment: str | None, project: Path | None) -> None:
    """Copy a snapshot to a local file (a partitioned one: a folder of its parts), verified against its id."""
    store = _snapshots(project, environment)
    snapshot = store.resolve(ref)
    target = store.get(snapshot, to)
    if snapshot.partitioned:
        count = len(snapshot.partitions)
        console().print(f"{snapshot.ref} → {target}/ ({count:,} part{'s' if count != 1 else ''}, each verified)")
    else:
        console().print(f"{snapshot.ref} → {target} (verified)")


@data.command("verify")
@click.argument("name", required=False)
@click.option(
    "--repair",
    is_flag=True,
    help="Restore damaged snapshots from an intact copy (current copy, added file; a part: any stored part with "
    "its digest).",
)
@env_option
@project_option
@json_option()
def data_verify(name: str | None, repair: bool, environment: str | None, project: Path | None, as_json: bool) -> None:
    """Hash every snapshot (of NAME, or all) and each current copy against its id; exit 1 if any is damaged."""
    from dataclasses import asdict

    from rich.markup import escape

    from mlops_template.data.verify import verify

    findings = verify(_snapshots(project, environment, check=True), name, repair=repair)
    problems = [f for f in findings if f.problem]
    if as_json:
        print_json([asdict(f) for f in findings])
    else:
        out = console()
        marks = {"ok": "[green]✓[/]", "current": "[green]✓[/]", "repaired": "[yellow]↺[/]", "unknown": "[yellow]?[/]"}
        for f in findings:
            what = f"current copy of {f.ref}" if f.status in ("current", "unknown") else f.ref
            detail = f"  {escape(f.detail)}" if f.detail else ""
            out.print(f"{marks.get(f.status, '[red]✗[/]')} {escape(what)}  {f.status}{detail}", markup=True)
        if not findings:
            out.print("No snapshots yet: `mlops run` or `mlops data add` stores some.")
        elif problems:
            hint = "" if repair else "; `--repair` restores those with an intact copy"
            out.print(f"{len(problems)} of {len(findings)} damaged or missing{hint}")
        else:
            out.print(f"All {len(findings)} intact.")
    if problems:
        raise SystemExit(1)


@data.command("schema")
@click.argument("ref", metavar="NAME")
@env_option
@project_option
def data_schema(ref: str, environment: str | None, project: Path | None) -> None:
    """Print a pandera schema module inferred from NAME's current snapshot (or NAME:ID), to edit into src/<package>/schemas.py."""
    from mlops_template.data.validation import infer_module

    store = _snapshots(project, environment, check=True)
    snapshot = store.resolve(ref) if ":" in ref else store.current(ref)
    _, df = store.read(snapshot)
    click.echo(infer_module(df, snapshot.name), nl=False)
