"""One check for the keys of a table in `mlops.toml`, so every table refuses a typo the same way."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from mlops_template.errors import ConfigError, choices


def check_keys(table: Any, allowed: Iterable[str], path: Path, where: str) -> None:
    """Raise a ConfigError unless `table` is a table whose keys are all `allowed`.

    `where` names the table as the file does (`dag`, `model.gate`,
    `steps.train_model.resources`); empty for the top level. A near miss gets a
    "did you mean" hint, and the valid keys are listed either way.
    """
    place = f"in [{where}]" if where else "at the top level"
    if not isinstance(table, dict):
        raise ConfigError(f"{path}: [{where}] must be a table")
    allowed = set(allowed)
    for key in table:
        if key not in allowed:
            raise ConfigError(f"{path}: unknown key '{key}' {place}; {choices(allowed, key)}")


def check_table(table: dict[str, Any], schema: dict[str, type], path: Path, where: str) -> None:
    """`check_keys`, and each value of the type `schema` gives it (`float` takes integers; `object` anything)."""
    check_keys(table, schema, path, where)
    for key, value in table.items():
        expected = schema[key]
        ok = isinstance(value, expected) and not (expected is int and isinstance(value, bool))
        if expected is float:
            ok = isinstance(value, int | float) and not isinstance(value, bool)
        if not ok:
            raise ConfigError(
                f"{path}: [{where}] {key} must be {type_name(expected)}, got {type(value).__name__} {value!r}"
            )


def type_name(kind: type) -> str:
    return {
        str: "a string",
        int: "an integer",
        float: "a number",
        bool: "true or false",
        dict: "a table",
        list: "a list",
    }[kind]
