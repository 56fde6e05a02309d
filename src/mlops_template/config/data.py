"""The data settings of `mlops.toml`: `[data]` (engine, validation, also per environment) and an environment's
`[environments.<name>.connections]` for SQL sources.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from mlops_template.config.keys import check_table
from mlops_template.errors import ConfigError, choices

DATA_KEYS = {"engine": str, "validation": str}
VALIDATION = ("error", "warn", "off")
ENGINES = ("pandas", "dask", "auto")


def parse_connections(table: dict[str, Any], path: Path, where: str) -> tuple[tuple[str, str], ...]:
    """`[environments.<name>.connections]`: SQLAlchemy URLs by name; a password goes in as `${VARIABLE}`."""
    for name, url in table.items():
        if not isinstance(url, str) or "://" not in url:
            raise ConfigError(
                f"{path}: [{where}] {name} must be a SQLAlchemy URL string such as "
                f'"duckdb:///warehouse.duckdb" or "postgresql+psycopg2://user:${{PASSWORD}}@host/db", got {url!r}'
            )
        userinfo = url.split("://", 1)[1].split("/", 1)[0].rpartition("@")[0]
        password = userinfo.partition(":")[2]
        if password and not re.fullmatch(r"\$\{[A-Za-z_][A-Za-z0-9_]*\}", password):
            raise ConfigError(
                f"{path}: [{where}] {name} holds a password; passwords stay out of mlops.toml: write "
                f"${{{name.upper()}_PASSWORD}} in its place and set that variable where the pipeline runs"
            )
    return tuple(sorted(table.items()))


def parse_validation(table: dict[str, Any], path: Path, where: str) -> str | None:
    """`[data] validation`: what a table failing its schema does: error (the default), warn, or off."""
    value = table.get("validation")
    if value is not None and value not in VALIDATION:
        raise ConfigError(f"{path}: [{where}] validation '{value}' is unknown; {choices(VALIDATION, value)}")
    return value


def parse_engine(table: dict[str, Any], path: Path, where: str) -> str | None:
    """`[data] engine`: pandas, dask, or auto (Dask when the raw data is large for this machine)."""
    check_table(table, DATA_KEYS, path, where)
    engine = table.get("engine")
    if engine is not None and engine not in ENGINES:
        raise ConfigError(f"{path}: [{where}] engine '{engine}' is unknown; {choices(ENGINES, engine)}")
    return engine
