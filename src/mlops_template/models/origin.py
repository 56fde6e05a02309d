"""The source of a promotion: a registered version of one environment, read and checked before anything is copied.

Its tags must carry the sha256 of its files, its snapshots must be readable in
its storage, and its files, downloaded, must match that sha256: a version
that fails any of these is refused while the target is still untouched.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from mlops_template.config.load import Config, Environment
from mlops_template.data.layout import Snapshot
from mlops_template.data.snapshots import SnapshotStore
from mlops_template.errors import ConfigError, IntegrityError, StorageError, TrackingError
from mlops_template.models import model_files, registry
from mlops_template.storage import open_storage
from mlops_template.tracking.connect import point_at
from mlops_template.tracking.failures import store_errors
from mlops_template.tracking.tags import TAG_HELDOUT_DATA, TAG_MODEL_SHA256, TAG_TRAINING_DATA

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion


@dataclass
class Origin:
    """The source version, checked: its tags, its files (downloaded, sha256 verified) and its snapshots."""

    env: Environment
    version: str
    run_id: str | None
    tags: dict[str, str]
    sha256: str
    folder: Path
    store: SnapshotStore
    training: list[Snapshot]
    heldout: Snapshot | None
    params: dict[str, str]

    @property
    def ref(self) -> str:
        return f"{self.env.name}:{self.version}"

    @property
    def snapshots(self) -> list[Snapshot]:
        unique = {s.key: s for s in [*self.training, *([self.heldout] if self.heldout else [])]}
        return list(unique.values())


def read_origin(config: Config, env: Environment, version: str, folder: Path, *, need_heldout: bool) -> Origin:
    """Find the version, check its snapshots are there, download its files and check their sha256."""
    import mlflow

    name = config.model.name
    point_at(env)
    client = mlflow.MlflowClient()
    with store_errors(env, registry=True):
        found = _source_version(client, env, name, version)
    tags = dict(found.tags)
    sha256 = tags.get(TAG_MODEL_SHA256)
    if not sha256:
        raise IntegrityError(
            f"environment '{env.name}': {name} v{version} carries no {TAG_MODEL_SHA256}, so its files cannot be "
            "checked on the way; promote a version that `mlops run` registered"
        )
    heldout_ref = tags.get(TAG_HELDOUT_DATA)
    if need_heldout and not heldout_ref:
        raise ConfigError(
            f"environment '{env.name}': {name} v{version} records no held-out snapshot ({TAG_HELDOUT_DATA}); "
            "name the rows the target's gate scores with --evaluate NAME"
        )
    store = SnapshotStore(open_storage(env, check=True))
    training = [_source_snapshot(store, env, name, version, ref) for ref in refs(tags.get(TAG_TRAINING_DATA))]
    heldout = _source_snapshot(store, env, name, version, heldout_ref) if heldout_ref else None
    with store_errors(env, registry=True):
        path = Path(mlflow.artifacts.download_artifacts(f"models:/{name}/{version}", dst_path=str(folder)))
        params = dict(client.get_run(found.run_id).data.params) if found.run_id else {}
    model_files.drop_download_notes(path)
    actual = model_files.sha256(path)
    if actual != sha256:
        raise IntegrityError(
            f"environment '{env.name}': the files of {name} v{version} do not match its {TAG_MODEL_SHA256} "
            f"({actual[:12]} != {sha256[:12]}): they were changed after registration; nothing was copied, "
            "restore them or promote another version"
        )
    return Origin(env, version, found.run_id, tags, sha256, path, store, training, heldout, params)


def _source_version(client: MlflowClient, env: Environment, name: str, version: str) -> ModelVersion:
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version(name, version)
    except MlflowException as exc:
        if exc.error_code not in registry.MISSING:
            raise
    try:
        known = sorted((str(v.version) for v in client.search_model_versions(f"name='{name}'")), key=int)
    except MlflowException:
        known = []
    raise TrackingError(
        f"environment '{env.name}': model '{name}' has no version '{version}'; "
        f"valid: {', '.join(known) or '(none: train one there first)'} (`mlops models --environment {env.name}`)"
    )


def _source_snapshot(store: SnapshotStore, env: Environment, model: str, version: str, ref: str) -> Snapshot:
    try:
        return store.resolve(ref)
    except StorageError as exc:
        raise StorageError(
            f"environment '{env.name}': snapshot {ref} of {model} v{version} cannot be read ({exc}); "
            "nothing was copied: restore it there and promote again"
        ) from exc


def refs(value: str | None) -> list[str]:
    return [ref for ref in (value or "").split(",") if ref]
