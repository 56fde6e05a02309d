"""Dataset schemas checked at the step boundaries, with pandera.

A project declares a `pandera` `DataFrameSchema` per dataset in
`src/<package>/schemas.py`, named after it (`processed = pa.DataFrameSchema(...)`,
`raw` for what `read_raw` reads, a query's name for what `read_sql` returns).
A table is checked lazily, every failure at once; a failure is summed up in
one line (the columns and checks that failed, on how many rows) and the
failing rows (the first MAX_REPORTED) go into a report the step run keeps.
`[data] validation` says what a failure does: `error` (the step stops and
nothing is stored), `warn` (a warning, and the table is stored), `off`.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mlops_template.errors import ConfigError

if TYPE_CHECKING:
    import pandas as pd

MAX_REPORTED = 100
SCHEMAS_MODULE = "schemas"


@dataclass(frozen=True)
class Failure:
    """A table that failed its schema: the one-line summary, and the failure cases (at most MAX_REPORTED rows)."""

    dataset: str
    summary: str
    report: pd.DataFrame


def load_schemas(package: str) -> dict[str, Any]:
    """The `DataFrameSchema`s of `<package>.schemas`, by dataset name; none when the project has no such module.

    pandera is imported only when the module exists: a project without schemas does not pay for it.
    """
    name = f"{package}.{SCHEMAS_MODULE}"
    try:
        if importlib.util.find_spec(package) is None or importlib.util.find_spec(name) is None:
            return {}
    except ModuleNotFoundError:
        return {}
    try:
        module = sys.modules.get(name) or importlib.import_module(name)
    except SyntaxError as exc:
        raise ConfigError(
            f"{exc.filename}, line {exc.lineno}: {exc.msg}; fix the schema module (pandera DataFrameSchemas named "
            "after their datasets)"
        ) from exc
    except Exception as exc:
        raise ConfigError(f"{name} cannot be imported ({type(exc).__name__}: {exc}); fix the schema module") from exc
    import pandera.pandas as pa

    return {key: value for key, value in vars(module).items() if isinstance(value, pa.DataFrameSchema)}


def unused_schemas(package: str, datasets: Callable[[], list[str]]) -> list[str]:
    """A warning for each schema named after no dataset the storage holds, once a run has written them: a typo.

    `datasets` lists the storage's dataset names; it is called only when the project has schemas.
    """
    from mlops_template.errors import choices

    schemas = load_schemas(package)
    if not schemas:
        return []
    names = datasets()
    return [
        f"{package}.{SCHEMAS_MODULE}: schema '{name}' is named after no dataset, so it checks nothing; "
        f"{choices(names, name)} (name each schema after the dataset it checks)"
        for name in schemas
        if name not in names
    ]


def check(df: pd.DataFrame, schema: Any, dataset: str) -> Failure | None:
    """Validate `df` against `schema`, every failure at once; None when it passes."""
    import pandera.pandas as pa

    try:
        schema.validate(df, lazy=True)
    except pa.errors.SchemaErrors as exc:
        return _failure(dataset, exc.failure_cases)
    return None


def validated_part(part: pd.DataFrame, schema: Any, dataset: str, warn: bool = False) -> pd.DataFrame:
    """A Dask partition, checked by the worker that holds it: a failure stops the write with its summary.

    With `warn`, the worker logs the summary instead (on its own stderr) and the partition is kept.
    """
    import logging

    from mlops_template.errors import DataError

    failure = check(part, schema, dataset)
    if failure is not None and warn:
        logging.getLogger("mlops_template").warning("%s (one partition; stored anyway)", failure.summary)
    elif failure is not None:
        raise DataError(failure.summary)
    return part


def _failure(dataset: str, cases: pd.DataFrame) -> Failure:
    """One line per schema: each (column, check) that failed and on how many rows, the worst first."""
    table_wide, by_column = [], []
    labelled = cases.assign(column=cases["column"].fillna(""))
    for (column, check_name), group in labelled.groupby(["column", "check"], sort=False):
        if not column:  # a check of the table itself: a column missing, or one the schema does not know
            table_wide.append(f"{check_name} {_cases(group)}")
        elif group["index"].isna().all():  # a check of the column as a whole (its dtype): what it found instead
            by_column.append((len(labelled), f"column '{column}' fails {check_name} {_cases(group)}"))
        else:
            rows = group["index"].nunique()
            by_column.append((rows, f"column '{column}' fails {check_name} on {rows} row{'s' if rows != 1 else ''}"))
    parts = table_wide + [text for _, text in sorted(by_column, key=lambda item: -item[0])]
    bad_rows = cases["index"].dropna().nunique()
    summary = f"dataset '{dataset}' fails its schema ({bad_rows} rows): " + "; ".join(parts)
    order = ["schema_context", "column", "check", "check_number", "failure_case", "index"]
    report = cases[[c for c in order if c in cases.columns]].head(MAX_REPORTED).astype(str)
    return Failure(dataset, summary, report)


def _cases(group: pd.DataFrame) -> str:
    found = group["failure_case"].astype(str).tolist()
    return f"({', '.join(found[:5])}{', …' if len(found) > 5 else ''})"


def infer_module(df: pd.DataFrame, dataset: str) -> str:
    """A schema module (Python source) for `df`, inferred by pandera, for a team to edit: it validates `df`."""
    import pandera.pandas as pa

    inferred = pa.infer_schema(df)
    lines = [
        f'"""Schemas of the datasets, checked when a step writes them; `{dataset}` inferred from its snapshot."""',
        "",
        "import pandera.pandas as pa",
        "",
        f"{dataset} = pa.DataFrameSchema(",
        "    {",
    ]
    for name, column in inferred.columns.items():
        checks = [_check_source(c) for c in column.checks]
        args = [repr(str(column.dtype)), f"nullable={column.nullable}"]
        if checks:
            args.append(f"checks=[{', '.join(checks)}]")
        lines.append(f"        {name!r}: pa.Column({', '.join(args)}),")
    lines += ["    },", "    strict=True,", ")", ""]
    return "\n".join(lines)


def _check_source(check: Any) -> str:
    stats = dict(check.statistics or {})
    arguments = ", ".join(repr(_plain(v)) for v in stats.values())
    return f"pa.Check.{check.name}({arguments})"


def _plain(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else value
