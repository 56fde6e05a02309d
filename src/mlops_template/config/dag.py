"""`[dag]` in `mlops.toml`: what applies to a project's whole Airflow DAG rather than one step."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

from mlops_template.config.keys import check_keys
from mlops_template.config.resources import check_repository
from mlops_template.errors import ConfigError, choices

_DAG_KEYS = (
    "repository",
    "environment",
    "namespace",
    "service_account",
    "secrets",
    "schedule",
    "start_date",
    "retries",
    "retry_delay",
    "execution_timeout",
    "tags",
)
_DURATION = re.compile(r"([0-9]+)\s*(s|m|h|d)?")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, None: 1}
_PRESETS = ("@once", "@continuous", "@hourly", "@daily", "@weekly", "@monthly", "@quarterly", "@yearly")
_K8S_NAME = re.compile(r"[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?")


@dataclass(frozen=True)
class DagSettings:
    """`[dag]`: what applies to the whole DAG rather than one step."""

    repository: str | None = None  # image repository; the tag is read from an Airflow Variable at run time
    environment: str | None = None  # the environment the pods run against
    namespace: str = "default"
    service_account: str | None = None  # cloud credentials come through it (IRSA on EKS)
    secrets: tuple[str, ...] = ()  # Kubernetes Secrets whose keys become the pods' environment, by name
    schedule: str | None = None  # none: the DAG runs when triggered
    start_date: str | None = None
    retries: int = 2
    retry_delay: int = 300  # seconds
    execution_timeout: int | None = None  # seconds; none: no limit
    tags: tuple[str, ...] = ()  # besides "mlops" and the project's name


def parse_dag(table: Any, path: Path) -> DagSettings:
    """`[dag]` as :class:`DagSettings`, or a ConfigError naming the key and the fix."""
    check_keys(table, _DAG_KEYS, path, "dag")
    values: dict[str, Any] = {}
    for key in ("environment", "namespace", "service_account", "schedule", "start_date"):
        if key in table:
            if not isinstance(table[key], str) or not table[key]:
                raise ConfigError(f"{path}: [dag] {key} must be a non-empty string, got {table[key]!r}")
            values[key] = table[key]
    if "repository" in table:
        values["repository"] = check_repository(table["repository"], f"{path}: [dag] repository")
    for key in ("namespace", "service_account"):
        if key in values and not _K8S_NAME.fullmatch(values[key]):
            raise ConfigError(
                f"{path}: [dag] {key} {values[key]!r} is not a Kubernetes name; use lower-case letters, digits and '-'"
            )
    if "schedule" in values:
        values["schedule"] = _schedule(values["schedule"], path)
    if "start_date" in values:
        try:
            date.fromisoformat(values["start_date"])
        except ValueError as exc:
            raise ConfigError(
                f"{path}: [dag] start_date {values['start_date']!r} is not a date; write e.g. 2026-01-01"
            ) from exc
    for key in ("secrets", "tags"):
        if key in table:
            value = table[key]
            if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
                raise ConfigError(f'{path}: [dag] {key} must be a list of strings, e.g. {key} = ["churn-mlflow"]')
            values[key] = tuple(value)
    for name in values.get("secrets", ()):
        if not _K8S_NAME.fullmatch(name):
            raise ConfigError(
                f"{path}: [dag] secrets names {name!r}, which is not a Kubernetes Secret name; "
                "list the names of Secrets in the namespace, never their values"
            )
    if "retries" in table:
        retries = table["retries"]
        if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
            raise ConfigError(
                f"{path}: [dag] retries must be a whole number of retries (e.g. retries = 2), got {retries!r}"
            )
        values["retries"] = retries
    for key in ("retry_delay", "execution_timeout"):
        if key in table:
            values[key] = _duration(table[key], path, key)
    return DagSettings(**values)


def _schedule(value: str, path: Path) -> str:
    if value.startswith("@"):
        if value not in _PRESETS:
            raise ConfigError(f"{path}: [dag] schedule {value!r} is not an Airflow preset; {choices(_PRESETS, value)}")
        return value
    if len(value.split()) != 5:
        raise ConfigError(
            f'{path}: [dag] schedule {value!r} is not a cron expression; write five fields ("0 3 * * *") or a preset such as @daily'
        )
    return value


def _duration(value: Any, path: Path, key: str) -> int:
    """Seconds, from a whole number of seconds or `"30s"`, `"5m"`, `"2h"`, `"1d"`."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    match = _DURATION.fullmatch(value.strip()) if isinstance(value, str) else None
    if match is None:
        raise ConfigError(f'{path}: [dag] {key} must be a duration such as "30s", "5m" or "2h", got {value!r}')
    return int(match[1]) * _UNIT_SECONDS[match[2]]
