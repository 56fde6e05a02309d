"""The model registry: versions, the `champion` alias, registration, and verified loading.

MLflow's registry has no compare-and-set, so registration (`register`, the
one flow for training and promotion) is done in steps that can each be
undone: create the version, look at the alias again (and, if `champion`
moved meanwhile, let the gate decide again against the new one), move the
alias, export the files, and delete the version if anything after its
creation fails.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlops_template.errors import IntegrityError, NoChampionError, TrackingError
from mlops_template.models import model_files
from mlops_template.models.journal import Pending
from mlops_template.models.trust import Trust, route
from mlops_template.tracking.tags import TAG_DATA_PREFIX, TAG_HELDOUT_DATA, TAG_MODEL_SHA256, TAG_TRAINING_DATA

if TYPE_CHECKING:
    from collections.abc import Callable

    import pandas as pd
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion

    from mlops_template.models.gate import Decision
    from mlops_template.storage import Storage
    from mlops_template.tracking.reader import Reader

CHAMPION = "champion"
MISSING = (
    "RESOURCE_DOES_NOT_EXIST",
    "INVALID_PARAMETER_VALUE",
    "NOT_FOUND",
)  # error codes meaning "no such model, version or alias"


def export_folder(name: str, version: str) -> str:
    """Where a registered version's files are exported under an environment's storage, for consumers without MLflow."""
    return f"models/{name}/v{version}"


def champion(client: MlflowClient, name: str) -> ModelVersion | None:
    """The version carrying the `champion` alias, or None when there is none yet."""
    return holder(client, name, CHAMPION)


def holder(client: MlflowClient, name: str, alias: str) -> ModelVersion | None:
    """The version carrying `alias`, or None when none does (or the model is not registered yet)."""
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException as exc:
        if exc.error_code in MISSING:
            return None
        raise TrackingError(f"model registry: cannot read alias '{alias}' of '{name}' ({exc.message})") from exc


@dataclass(frozen=True)
class Registration:
    """What `register` did: the version `alias` now points at, and the decision that stands."""

    version: str | None  # None: the gate, deciding again against a moved champion, refused
    decision: Decision


def register(
    client: MlflowClient,
    name: str,
    decision: Decision,
    *,
    regate: Callable[[ModelVersion | None], Decision],
    record: Callable[[Decision], None],
    alias: str = CHAMPION,
    beat_champion: bool = True,
    model_uri: str = "",
    run_id: str | None = None,
    tags: dict[str, str] | None = None,
    existing: str | None = None,
    export: tuple[Storage, Path] | None = None,
) -> Registration:
    """Register a model that passed the gate and point `alias` at it; undone if any step fails.

    A version of `model_uri` is created (or `existing`, registered before, is
    taken). If `alias` is `champion`, `beat_champion` is on and the champion is
    no longer the one `decision` compared against, `regate(new champion)`
    decides again and `record` keeps that decision; refused, a created version
    is deleted. Then the alias moves and `export` (storage, folder) copies the
    files to `models/<name>/v<version>/`; a failure there deletes the created
    version and points the alias back.
    """
    created = existing is None
    # Recorded before the first write, removed once complete or undone: see models.journal.
    pending = Pending(export[0], name, run_id, alias).open() if created and export and run_id else None
    version = existing or str(create_version(client, name, model_uri, run_id, tags or {}).version)
    previous, moved = None, False
    try:
        current = holder(client, name, alias)
        previous = str(current.version) if current else None
        if previous == version:  # an `existing` version someone pointed the alias at meanwhile
            return Registration(version, decision)
        if alias == CHAMPION and beat_champion and previous != (decision.champion_version or None):
            decision = regate(current)
            moved_to = f"moved to v{previous}" if previous else "was removed"
            decision = replace(decision, reason=f"{alias} {moved_to} meanwhile; {decision.reason}")
            record(decision)
            if not decision.passed:
                if created:
                    unregister(client, name, version, restore=None)
                if pending is not None:
                    pending.close()
                return Registration(None, decision)
        if alias == CHAMPION:
            set_champion(client, name, version)
        else:
            set_alias(client, name, alias, version)
        moved = True
        if created and export is not None:
            storage, folder = export
            storage.upload_dir(folder, export_folder(name, str(version)))
    except BaseException:
        if created:
            unregister(client, name, version, alias=alias, restore=previous if moved else None)
        if pending is not None:  # undone: nothing left for the next contact (kept if undoing failed)
            pending.close()
        raise
    if pending is not None:
        pending.close()
    return Registration(version, decision)


def version(client: MlflowClient, name: str, number: str) -> ModelVersion:
    """Version `number` of `name`; a TrackingError naming it when the registry no longer has it."""
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version(name, str(number))
    except MlflowException as exc:
        raise TrackingError(
            f"model '{name}' has no version {number} in the registry any more ({exc.message}); "
            "restore it, or reproduce only the steps that do not load it"
        ) from exc


def create_version(client: MlflowClient, name: str, model_uri: str, run_id: str, tags: dict[str, str]) -> ModelVersion:
    """Register `model_uri` as a new version of `name` (creating the model on first use); aliases unchanged."""
    from mlflow.exceptions import MlflowException

    try:
        try:
            client.create_registered_model(name)
        except MlflowException as exc:
            if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
        return client.create_model_version(
            name, model_uri, run_id=run_id, tags=tags, model_id=logged_model_id(model_uri)
        )
    except MlflowException as exc:
        raise TrackingError(
            f"model registry: cannot register a version of '{name}' ({exc.message}); "
            "run the training step again (another registration may have been under way)"
        ) from exc


def logged_model_id(model_uri: str) -> str | None:
    """The logged model's id in `models:/<id>` (what `log_model` returns), None for any other URI.

    A tracking server accepts such a source only with that id alongside: it checks that
    the version's source belongs to the logged model it names.
    """
    prefix = "models:/"
    if not model_uri.startswith(prefix):
        return None
    rest = model_uri[len(prefix) :]
    return rest if rest and "/" not in rest else None


def set_champion(client: MlflowClient, name: str, version: str) -> None:
    """Point `champion` at `version`."""
    set_alias(client, name, CHAMPION, version)


def set_alias(client: MlflowClient, name: str, alias: str, version: str) -> None:
    """Point `alias` at `version` (which exists)."""
    from mlflow.exceptions import MlflowException

    try:
        client.set_registered_model_alias(name, alias, str(version))
    except MlflowException as exc:
        raise TrackingError(f"model registry: cannot move '{alias}' of '{name}' to v{version} ({exc.message})") from exc


def unregister(client: MlflowClient, name: str, version: str, *, restore: str | None, alias: str = CHAMPION) -> None:
    """Undo a registration that could not be completed: drop the version, give `alias` back to `restore`."""
    from mlflow.exceptions import MlflowException

    try:
        client.delete_model_version(name, str(version))
        if restore is not None:
            client.set_registered_model_alias(name, alias, str(restore))
    except MlflowException as exc:
        back = f" and point '{alias}' back at v{restore} (`mlops promote {restore} --alias {alias}`)" if restore else ""
        raise TrackingError(
            f"model registry: v{version} of '{name}' could not be undone ({exc.message}); delete it by hand{back}"
        ) from exc


@dataclass(frozen=True)
class VersionInfo:
    version: str
    aliases: list[str]
    run_id: str | None
    created: int
    metric: float | None
    tags: dict[str, str]

    @property
    def training_data(self) -> list[str]:
        """The snapshots (`name:id`) the version was trained on."""
        return _training_refs(self.tags)

    @property
    def other_data(self) -> list[str]:
        """The other snapshots (`name:id`) its training run read or wrote, by dataset name."""
        trained_on = set(self.training_data)
        refs = (
            f"{k.removeprefix(TAG_DATA_PREFIX)}:{v}"
            for k, v in sorted(self.tags.items())
            if k.startswith(TAG_DATA_PREFIX)
        )
        return [ref for ref in refs if ref not in trained_on]


def _training_refs(tags: dict[str, str]) -> list[str]:
    """The `name:id` refs of a version's training-data tag, in the order they were recorded."""
    return [ref for ref in tags.get(TAG_TRAINING_DATA, "").split(",") if ref]


def list_versions(reader: Reader, name: str, *, metric: str) -> list[VersionInfo]:
    """Every registered version of `name`, newest first, with its aliases and gate metric.

    The metric is the one logged on the version's training run (none when
    that run is gone); the gate scores afresh, this is for the listing.
    """
    versions = reader.versions(name)
    # Version search leaves `aliases` empty on some stores; the registered model has them all.
    aliases = reader.aliases(name) if versions else {}
    infos = []
    for v in versions:
        run = reader.get(v.run_id) if v.run_id else None
        infos.append(
            VersionInfo(
                version=str(v.version),
                aliases=sorted(a for a, target in aliases.items() if str(target) == str(v.version)),
                run_id=v.run_id,
                created=v.creation_timestamp,
                metric=run.data.metrics.get(metric) if run is not None else None,
                tags=dict(v.tags),
            )
        )
    return sorted(infos, key=lambda v: int(v.version), reverse=True)


def promote(client: MlflowClient, name: str, version: str, *, alias: str = CHAMPION) -> None:
    """Point `alias` (default `champion`) at an existing version, by hand, bypassing the gate."""
    from mlflow.exceptions import MlflowException

    try:
        known = [str(v.version) for v in client.search_model_versions(f"name='{name}'")]
    except MlflowException as exc:
        raise TrackingError(f"model registry: cannot list versions of '{name}' ({exc.message})") from exc
    if str(version) not in known:
        raise TrackingError(
            f"model '{name}' has no version '{version}'; valid: {', '.join(sorted(known, key=int)) or '(none: train one first)'}"
        )
    try:
        client.set_registered_model_alias(name, alias, str(version))
    except MlflowException as exc:
        raise TrackingError(f"model registry: cannot move '{alias}' of '{name}' ({exc.message})") from exc


@dataclass
class Champion:
    """A loaded champion model: its registry version, the data it came from, and a `predict`."""

    name: str
    version: str
    model: Any
    feature_names: list[str] | None
    tags: dict[str, str]
    metadata: Any = None  # its MLmodel (mlflow.models.Model): flavours and signature, read without running code

    @property
    def heldout(self) -> str | None:
        """The snapshot (`name:id`) of the rows held out when it was trained: predict's default input."""
        return self.tags.get(TAG_HELDOUT_DATA)

    @property
    def training_data(self) -> list[str]:
        """The snapshots (`name:id`) it learnt from."""
        return _training_refs(self.tags)

    def features(self, df: pd.DataFrame) -> pd.DataFrame:
        """The columns the model was trained on, in its order; a missing one raises KeyError."""
        return df[self.feature_names] if self.feature_names else df

    def predict(self, df: pd.DataFrame):
        from mlops_template.models.scoring import predict

        return predict(self.model, self.features(df))


def load_champion(client: MlflowClient, name: str, trust: Trust | None = None) -> Champion:
    """The `champion` version, its files checked against the sha256 recorded at registration, loaded as `trust` allows.

    With no `trust`, the strictest: scikit-learn, numpy and scipy types, nothing that unpickles.
    """
    version = champion(client, name)
    if version is None:
        raise NoChampionError(
            f"model '{name}' has no '{CHAMPION}' version yet; "
            "train one first: `mlops run --step train_model` (it must pass the gate)"
        )
    return load_version(client, name, version, trust or Trust())


def load_version(client: MlflowClient, name: str, version: ModelVersion, trust: Trust) -> Champion:
    """Download one version into a temporary folder, verify its sha256, load it as `trust` allows; the folder is removed.

    A version with no sha256 recorded is refused: its files could be anything.
    """
    import mlflow

    what = f"model '{name}' v{version.version}"
    expected = version.tags.get(TAG_MODEL_SHA256)
    if not expected:
        raise IntegrityError(
            f"{what} carries no {TAG_MODEL_SHA256}, so its files cannot be verified and it is not loaded; "
            "register models through `mlops run` or `mlops promote`, which record it"
        )
    with tempfile.TemporaryDirectory(prefix="mlops-champion-") as tmp:
        path = Path(mlflow.artifacts.download_artifacts(f"models:/{name}/{version.version}", dst_path=tmp))
        actual = model_files.sha256(path)
        if expected != actual:
            raise IntegrityError(
                f"{what}: files do not match the sha256 recorded at registration "
                f"({actual[:12]} != {expected[:12]}); the artifacts were changed, re-train or restore them"
            )
        if actual in _loaded:  # held by this process: checked again for this environment's trust
            route(path, trust, what=what)
        else:  # loading checks the route
            _keep(actual, load_folder(path, trust, what=what))
        model, names = _loaded[actual]
        metadata = _metadata(path)
    return Champion(str(name), str(version.version), model, names, dict(version.tags), metadata)


#: Models this process holds, by the sha256 of their files: the gate and predict in one `mlops run` load the
#: same champion once, and the model a training step just registered is not loaded back from what it wrote.
#: The files are still downloaded and hashed on every load.
_loaded: dict[str, tuple[Any, list[str] | None]] = {}
_LOADED_KEPT = 2


def _keep(sha256: str, loaded: tuple[Any, list[str] | None]) -> None:
    _loaded[sha256] = loaded
    while len(_loaded) > _LOADED_KEPT:
        _loaded.pop(next(iter(_loaded)))


def remember(path: str | Path, sha256: str, model: Any) -> None:
    """Keep `model` as what the files at `path` (logged from it by this process, hashing to `sha256`) load to."""
    _keep(sha256, (model, input_names(path)))


def load_folder(path: str | Path, trust: Trust, *, what: str = "the model") -> tuple[Any, list[str] | None]:
    """A model folder (its `MLmodel` and files) loaded as `trust` allows, and the input columns its signature names."""
    from mlops_template.models import flavors

    return flavors.load(path, trust, what=what), input_names(path)


def _metadata(path: str | Path) -> Any:
    """A model folder's MLmodel, read as data (no model code runs)."""
    from mlflow.models import Model

    return Model.load(str(Path(path) / "MLmodel"))


def input_names(path: str | Path) -> list[str] | None:
    """The input columns a model folder's signature names, read from its MLmodel (no model code runs)."""
    signature = _metadata(path).signature
    schema = signature.inputs if signature is not None else None
    return schema.input_names() if schema is not None and schema.has_input_names() else None
