"""What a step's pod asks of a cluster: `[steps.<step>.resources]`, checked as Kubernetes would.

Quantities are Kubernetes quantities (`"500m"`, `"2"`, `"512Mi"`, `"10Gi"`); a limit
must not be below its request. Every problem is one :class:`ConfigError` naming
the key and the fix, raised when `mlops.toml` is read, so a DAG is never written
from a spec the cluster would refuse.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from mlops_template.config.keys import check_keys
from mlops_template.errors import ConfigError, choices

GPU_RESOURCE = "nvidia.com/gpu"

_KEYS = ("cpu", "memory", "cpu_limit", "memory_limit", "gpu", "node_selector", "tolerations", "image")
_TOLERATION_KEYS = ("key", "operator", "value", "effect", "toleration_seconds")
_OPERATORS = ("Equal", "Exists")
_EFFECTS = ("NoSchedule", "PreferNoSchedule", "NoExecute")

_QUANTITY = re.compile(r"(?P<number>[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?P<suffix>[numkMGTPE]|[KMGTPE]i|[eE][0-9]+)?")
_SUFFIX = {
    "": Decimal(1),
    "n": Decimal("1e-9"),
    "u": Decimal("1e-6"),
    "m": Decimal("1e-3"),
    "k": Decimal(10) ** 3,
    "M": Decimal(10) ** 6,
    "G": Decimal(10) ** 9,
    "T": Decimal(10) ** 12,
    "P": Decimal(10) ** 15,
    "E": Decimal(10) ** 18,
    "Ki": Decimal(2) ** 10,
    "Mi": Decimal(2) ** 20,
    "Gi": Decimal(2) ** 30,
    "Ti": Decimal(2) ** 40,
    "Pi": Decimal(2) ** 50,
    "Ei": Decimal(2) ** 60,
}
# An image reference: [registry[:port]/]path[:tag][@sha256:digest]; the tag is what follows the last ':' after the last '/'.
_IMAGE = re.compile(r"[a-z0-9]+(?:[._-][a-z0-9]+)*(?::[0-9]+)?(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*")
_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")


@dataclass(frozen=True)
class Toleration:
    """A Kubernetes toleration: lets the pod run on nodes with a matching taint."""

    key: str | None = None
    operator: str = "Equal"
    value: str | None = None
    effect: str | None = None
    toleration_seconds: int | None = None


@dataclass(frozen=True)
class Resources:
    """What a step's pod asks for when it runs on a cluster.

    `cpu` and `memory` are requests (what the scheduler reserves), `cpu_limit`
    and `memory_limit` caps; `gpu` is a count of `nvidia.com/gpu`; `image`
    replaces the DAG's image for this step only.
    """

    cpu: str | None = None
    memory: str | None = None
    cpu_limit: str | None = None
    memory_limit: str | None = None
    gpu: int | None = None
    node_selector: dict[str, str] = field(default_factory=dict)
    tolerations: tuple[Toleration, ...] = ()
    image: str | None = None

    def requests(self) -> dict[str, str]:
        return {k: v for k, v in (("cpu", self.cpu), ("memory", self.memory)) if v is not None}

    def limits(self) -> dict[str, str]:
        limits = {k: v for k, v in (("cpu", self.cpu_limit), ("memory", self.memory_limit)) if v is not None}
        if self.gpu:
            limits[GPU_RESOURCE] = str(self.gpu)
        return limits


def parse_resources(table: Any, path: Path, where: str) -> Resources:
    """`[<where>]` as :class:`Resources`, or a ConfigError naming the key and the fix."""
    check_keys(table, _KEYS, path, where)
    values: dict[str, Any] = {}
    for key in ("cpu", "memory", "cpu_limit", "memory_limit"):
        if key in table:
            values[key] = _quantity(table[key], path, where, key)
    for request, limit in (("cpu", "cpu_limit"), ("memory", "memory_limit")):
        if request in values and limit in values and quantity_value(values[limit]) < quantity_value(values[request]):
            raise ConfigError(
                f"{path}: [{where}] {limit} {values[limit]!r} is below {request} {values[request]!r}; "
                f"raise {limit} to at least {values[request]!r} or lower {request}"
            )
    if "gpu" in table:
        gpu = table["gpu"]
        if isinstance(gpu, bool) or not isinstance(gpu, int) or gpu < 0:
            raise ConfigError(f"{path}: [{where}] gpu must be a whole number of GPUs (e.g. gpu = 1), got {gpu!r}")
        values["gpu"] = gpu
    if "node_selector" in table:
        values["node_selector"] = _labels(table["node_selector"], path, where)
    if "tolerations" in table:
        values["tolerations"] = _tolerations(table["tolerations"], path, where)
    if "image" in table:
        values["image"] = check_image(table["image"], f"{path}: [{where}] image")
    return Resources(**values)


def quantity_value(quantity: str) -> Decimal:
    """A Kubernetes quantity as a number (`"500m"` → 0.5, `"1Gi"` → 1073741824)."""
    match = _QUANTITY.fullmatch(quantity)
    if match is None:
        raise ValueError(quantity)
    suffix = match["suffix"] or ""
    number = Decimal(match["number"])
    if suffix[:1] in ("e", "E"):
        return number * Decimal(10) ** int(suffix[1:])
    return number * _SUFFIX[suffix]


def _quantity(value: Any, path: Path, where: str, key: str) -> str:
    example = '"500m" or "2"' if key.startswith("cpu") else '"512Mi" or "10Gi"'
    if isinstance(value, int | float) and not isinstance(value, bool):
        value = format(Decimal(str(value)).normalize(), "f")
    if not isinstance(value, str):
        raise ConfigError(f"{path}: [{where}] {key} must be a Kubernetes quantity such as {example}, got {value!r}")
    try:
        positive = quantity_value(value) > 0
    except (ValueError, InvalidOperation):
        positive = None
    if positive is None:
        raise ConfigError(
            f"{path}: [{where}] {key} {value!r} is not a Kubernetes quantity; write a number with an optional "
            f"unit and no space, such as {example}"
        )
    if not positive:
        raise ConfigError(f"{path}: [{where}] {key} {value!r} must be above zero; write e.g. {example}")
    return value


def _labels(value: Any, path: Path, where: str) -> dict[str, str]:
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise ConfigError(
            f"{path}: [{where}] node_selector must be a table of strings, "
            'e.g. node_selector = { "node.kubernetes.io/instance-type" = "c5.2xlarge" }'
        )
    return dict(value)


def _tolerations(value: Any, path: Path, where: str) -> tuple[Toleration, ...]:
    example = 'tolerations = [{ key = "gpu", operator = "Exists", effect = "NoSchedule" }]'
    if not isinstance(value, list) or not all(isinstance(t, dict) for t in value):
        raise ConfigError(f"{path}: [{where}] tolerations must be a list of tables, e.g. {example}")
    out = []
    for i, table in enumerate(value):
        at = f"[{where}] tolerations[{i}]"
        check_keys(table, _TOLERATION_KEYS, path, f"{where}.tolerations[{i}]")
        for key in ("key", "value"):
            if key in table and not isinstance(table[key], str):
                raise ConfigError(f"{path}: {at} {key} must be a string, got {table[key]!r}")
        operator = table.get("operator", "Exists" if "value" not in table else "Equal")
        if operator not in _OPERATORS:
            raise ConfigError(f"{path}: {at} operator {operator!r} is not valid; {choices(_OPERATORS, operator)}")
        if operator == "Exists" and "value" in table:
            raise ConfigError(f"{path}: {at} has operator Exists and a value; drop the value or use operator Equal")
        if operator == "Equal" and "key" not in table:
            raise ConfigError(f'{path}: {at} with operator Equal needs a key; add key = "..."')
        effect = table.get("effect")
        if effect is not None and effect not in _EFFECTS:
            raise ConfigError(f"{path}: {at} effect {effect!r} is not valid; {choices(_EFFECTS, str(effect))}")
        seconds = table.get("toleration_seconds")
        if seconds is not None and (isinstance(seconds, bool) or not isinstance(seconds, int) or seconds < 0):
            raise ConfigError(f"{path}: {at} toleration_seconds must be a whole number of seconds, got {seconds!r}")
        out.append(
            Toleration(
                key=table.get("key"),
                operator=operator,
                value=table.get("value"),
                effect=effect,
                toleration_seconds=seconds,
            )
        )
    return tuple(out)


def check_image(image: Any, what: str) -> str:
    """A full image reference with a tag or digest; a bare repository would run whatever was pushed last."""
    if not isinstance(image, str) or not image:
        raise ConfigError(f"{what} must be an image reference such as registry/churn:<commit sha>, got {image!r}")
    name, _, digest = image.partition("@")
    repository, tag = split_tag(name)
    if not _IMAGE.fullmatch(repository) or (tag is not None and not _TAG.fullmatch(tag)):
        raise ConfigError(f"{what} {image!r} is not a valid image reference; write registry/name:tag")
    if digest and not _DIGEST.fullmatch(digest):
        raise ConfigError(f"{what} {image!r} has a malformed digest; write name@sha256:<64 hex digits>")
    if tag is None and not digest:
        raise ConfigError(
            f"{what} {image!r} has no tag; add the commit tag scripts/build_image.sh pushed ({image}:<commit sha>)"
        )
    return image


def split_tag(name: str) -> tuple[str, str | None]:
    """`registry:5000/team/churn:abc` → (`registry:5000/team/churn`, `abc`); no tag → (name, None)."""
    head, slash, last = name.rpartition("/")
    if ":" not in last:
        return name, None
    last, _, tag = last.partition(":")
    return head + slash + last, tag


def check_repository(repository: Any, what: str) -> str:
    """An image repository without a tag: the tag is chosen when the DAG runs."""
    if not isinstance(repository, str) or not repository:
        raise ConfigError(
            f"{what} must be an image repository such as 123456789012.dkr.ecr.eu-west-1.amazonaws.com/churn"
        )
    repo, tag = split_tag(repository)
    if tag is not None or "@" in repository:
        raise ConfigError(
            f"{what} {repository!r} names a tag; write the repository alone ({repo}): the DAG reads the tag "
            "from an Airflow Variable, or pass a fixed image with mlops dag --image"
        )
    if not _IMAGE.fullmatch(repository):
        raise ConfigError(f"{what} {repository!r} is not a valid image repository; use lower-case registry/path")
    return repository
