"""The model registry: the approval gate, registration, the `champion` alias, and verified loading."""

from __future__ import annotations

import hashlib
import math
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .config import Gate
from .errors import IntegrityError, NoChampionError, TrackingError
from .tracking import TAG_MODEL_SHA256

if TYPE_CHECKING:
    import pandas as pd
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion

CHAMPION = "champion"


@dataclass(frozen=True)
class Decision:
    """What the gate decided about a candidate model, and why."""

    passed: bool
    reason: str
    metric: str
    value: float | None
    champion_version: str | None = None
    champion_value: float | None = None


def evaluate_gate(
    gate: Gate,
    metrics: dict[str, float],
    *,
    champion_value: float | None = None,
    champion_version: str | None = None,
) -> Decision:
    """Apply the gate: `metric` must reach `min`, and beat the champion when `beat_champion`."""
    value = metrics.get(gate.metric)
    if _is_nan(champion_value):
        champion_value = None  # a champion without a usable value must not block every candidate
    common = dict(metric=gate.metric, value=value, champion_version=champion_version, champion_value=champion_value)
    if value is None:
        logged = ", ".join(sorted(metrics)) or "(none)"
        return Decision(False, f"metric '{gate.metric}' was not logged; logged: {logged}", **common)
    if _is_nan(value):
        return Decision(False, f"{gate.metric} is NaN; check the evaluation that computes it", **common)
    better = (lambda a, b: a > b) if gate.higher_is_better else (lambda a, b: a < b)
    bound = "≥" if gate.higher_is_better else "≤"
    if gate.min is not None and not (value == gate.min or better(value, gate.min)):
        return Decision(False, f"{gate.metric}={value:.4g} does not reach {bound} {gate.min:g}", **common)
    if gate.beat_champion and champion_value is not None and not better(value, champion_value):
        return Decision(
            False,
            f"{gate.metric}={value:.4g} does not beat champion v{champion_version} ({champion_value:.4g})",
            **common,
        )
    reason = f"{gate.metric}={value:.4g}" + (f" {bound} {gate.min:g}" if gate.min is not None else "")
    if gate.beat_champion and champion_value is not None:
        reason += f" and beats champion v{champion_version} ({champion_value:.4g})"
    elif gate.beat_champion and champion_version is not None:
        reason += f"; champion v{champion_version} has no {gate.metric}"
    return Decision(True, reason, **common)


def _is_nan(value: float | None) -> bool:
    return value is not None and math.isnan(value)


def champion(client: MlflowClient, name: str) -> ModelVersion | None:
    """The version carrying the `champion` alias, or None when there is none yet."""
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version_by_alias(name, CHAMPION)
    except MlflowException as exc:
        if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND"):
            return None
        raise TrackingError(f"model registry: cannot read alias '{CHAMPION}' of '{name}' ({exc.message})") from exc


def champion_metric(client: MlflowClient, version: ModelVersion, metric: str) -> float | None:
    if not version.run_id:
        return None
    return client.get_run(version.run_id).data.metrics.get(metric)


def register(client: MlflowClient, name: str, model_uri: str, run_id: str, tags: dict[str, str]) -> ModelVersion:
    """Register a new version and move the `champion` alias to it."""
    from mlflow.exceptions import MlflowException

    try:
        try:
            client.get_registered_model(name)
        except MlflowException:
            client.create_registered_model(name)
        version = client.create_model_version(name, model_uri, run_id=run_id, tags=tags)
        client.set_registered_model_alias(name, CHAMPION, version.version)
    except MlflowException as exc:
        raise TrackingError(f"model registry: cannot register '{name}' ({exc.message})") from exc
    return version


# Written by MLflow into every download of `models:/<name>/<version>`, so not part of the model.
_DOWNLOAD_NOTES = {"registered_model_meta"}


def unregister(client: MlflowClient, name: str, version: str, *, restore: ModelVersion | None) -> None:
    """Undo `register` when what follows it failed: drop the version, give `champion` back."""
    client.delete_model_version(name, version)
    if restore is not None:
        client.set_registered_model_alias(name, CHAMPION, str(restore.version))


@dataclass(frozen=True)
class VersionInfo:
    version: str
    aliases: list[str]
    run_id: str | None
    created: int
    metric: float | None
    tags: dict[str, str]


def list_versions(client: MlflowClient, name: str, *, metric: str) -> list[VersionInfo]:
    """Every registered version of `name`, newest first, with its aliases and gate metric."""
    from mlflow.exceptions import MlflowException

    try:
        versions = client.search_model_versions(f"name='{name}'")
        # Version search leaves `aliases` empty on some stores; the registered model has them all.
        aliases = client.get_registered_model(name).aliases if versions else {}
    except MlflowException as exc:
        raise TrackingError(f"model registry: cannot list versions of '{name}' ({exc.message})") from exc
    return sorted(
        (
            VersionInfo(
                version=str(v.version),
                aliases=sorted(a for a, target in aliases.items() if str(target) == str(v.version)),
                run_id=v.run_id,
                created=v.creation_timestamp,
                metric=champion_metric(client, v, metric),
                tags=dict(v.tags),
            )
            for v in versions
        ),
        key=lambda v: int(v.version),
        reverse=True,
    )


def promote(client: MlflowClient, name: str, version: str, *, alias: str = CHAMPION) -> None:
    """Point `alias` (default `champion`) at an existing version, by hand, bypassing the gate."""
    from mlflow.exceptions import MlflowException

    known = [str(v.version) for v in client.search_model_versions(f"name='{name}'")]
    if str(version) not in known:
        raise TrackingError(
            f"model '{name}' has no version '{version}'; valid: {', '.join(sorted(known, key=int)) or '(none: train one first)'}"
        )
    try:
        client.set_registered_model_alias(name, alias, str(version))
    except MlflowException as exc:
        raise TrackingError(f"model registry: cannot move '{alias}' of '{name}' ({exc.message})") from exc


def directory_sha256(folder: str | Path) -> str:
    """A hash of every model file's relative path and bytes: changes if any of them changes."""
    digest = hashlib.sha256()
    root = Path(folder)
    for file in sorted(p for p in root.rglob("*") if p.is_file() and p.name not in _DOWNLOAD_NOTES):
        digest.update(file.relative_to(root).as_posix().encode() + b"\0")
        digest.update(hashlib.sha256(file.read_bytes()).digest())
    return digest.hexdigest()


@dataclass
class Champion:
    """A loaded champion model: its registry version and a `predict` that feeds it the right columns."""

    name: str
    version: str
    model: Any
    path: Path
    feature_names: list[str] | None

    def predict(self, df: pd.DataFrame):
        features = df[self.feature_names] if self.feature_names else df
        return self.model.predict(features)


def load_champion(client: MlflowClient, name: str, *, dst: str | None = None) -> Champion:
    """Download the champion, check its files against the sha256 recorded at registration, load it."""
    import mlflow

    version = champion(client, name)
    if version is None:
        raise NoChampionError(
            f"model '{name}' has no '{CHAMPION}' version yet; "
            "train one first: `mlops run --step train_model` (it must pass the gate)"
        )
    dst = dst or tempfile.mkdtemp(prefix="mlops-champion-")
    path = Path(mlflow.artifacts.download_artifacts(f"models:/{name}/{version.version}", dst_path=dst))
    expected = version.tags.get(TAG_MODEL_SHA256)
    actual = directory_sha256(path)
    if expected and expected != actual:
        raise IntegrityError(
            f"model '{name}' v{version.version}: files do not match the sha256 recorded at registration "
            f"({actual[:12]} != {expected[:12]}); the artifacts were changed, re-train or restore them"
        )
    model = mlflow.pyfunc.load_model(str(path))
    schema = model.metadata.get_input_schema()
    names = schema.input_names() if schema is not None and schema.has_input_names() else None
    return Champion(name=name, version=str(version.version), model=model, path=path, feature_names=names)
