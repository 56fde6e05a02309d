"""Step params from the command line (`-P key=value`) laid over those in `mlops.toml`."""

from __future__ import annotations

import tomllib
from typing import Any

from mlops_template.errors import ConfigError, choices


def parse_value(text: str) -> Any:
    """Read a value as TOML would (`3` → int, `0.5` → float, `true` → bool), else keep the string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def parse_overrides(items: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """`["max_depth=3", "train_model.seed=1"]` → `{"max_depth": 3, "train_model.seed": 1}`."""
    overrides = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(
                f"param '{item}' is not KEY=VALUE; write it as -P max_depth=3 or -P train_model.max_depth=3"
            )
        overrides[key.strip()] = parse_value(value.strip())
    return overrides


def apply_overrides(params: dict[str, dict[str, Any]], overrides: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Lay overrides over each step's params.

    `step.key` targets one step; a bare `key` sets it in every step that has it.
    A key no selected step knows is an error, so a typo never goes unnoticed.
    """
    result = {step: dict(p) for step, p in params.items()}
    for key, value in overrides.items():
        step, dot, name = key.rpartition(".")
        if dot:
            if step not in result:
                raise ConfigError(f"param '{key}': step '{step}' is not being run; {choices(result, step)}")
            result[step][name] = value
            continue
        targets = [s for s, p in result.items() if key in p]
        if not targets:
            known = {k for p in result.values() for k in p}
            raise ConfigError(
                f"param '{key}' is not a param of any step being run; {choices(known, key)} "
                "(or use STEP.KEY=VALUE to add one)"
            )
        for step in targets:
            result[step][key] = value
    return result
