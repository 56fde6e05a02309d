"""Registrations in flight, recorded in the environment's storage so that none is left half-done.

Registering a model is several calls to the registry (create the version, move
the alias, export the files); a process killed or a server lost between them
would leave a version no alias points at, or a champion without its exported
copy. So a registration first writes a record under `registrations/<model>/`
and removes it once the registration is complete or cleanly undone. The next
contact with the environment (`mlops run`, `runs`, `models`) settles what a
record was left for: a version the alias already points at is finished (its
files exported), any other version of that run is deleted, and one line says
which.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from mlops_template.errors import StorageError

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from mlops_template.config.load import Config, Environment
    from mlops_template.storage import Storage

PREFIX = "registrations"


@dataclass(frozen=True)
class Pending:
    """A registration under way: which model, from which run, for which alias."""

    storage: Storage
    name: str
    run_id: str
    alias: str

    @property
    def key(self) -> str:
        return f"{PREFIX}/{self.name}/{self.run_id}.json"

    def open(self) -> Pending:
        body = {"name": self.name, "run_id": self.run_id, "alias": self.alias, "started": datetime.now(UTC).isoformat()}
        self.storage.write_bytes(self.key, json.dumps(body).encode())
        return self

    def close(self) -> None:
        self.storage.delete(self.key)


def settle(client: MlflowClient, storage: Storage, name: str) -> list[str]:
    """Finish or undo the registrations of `name` a process left in flight; one sentence for each."""
    said = []
    for key in sorted(k for k in storage.list(f"{PREFIX}/{name}") if k.endswith(".json")):
        try:
            record = json.loads(storage.read_bytes(key))
            run_id, alias = str(record["run_id"]), str(record["alias"])
        except (StorageError, ValueError, KeyError):
            continue  # removed meanwhile by the process that wrote it, or not ours
        said.extend(_settle_one(client, storage, name, run_id, alias))
        storage.delete(key)
    return said


def _settle_one(client: MlflowClient, storage: Storage, name: str, run_id: str, alias: str) -> list[str]:
    from mlops_template.models.registry import export_folder, holder

    versions = client.search_model_versions(f"name='{name}' and run_id='{run_id}'")
    if not versions:
        return [f"model '{name}': the registration of run {run_id} was interrupted before it made a version"]
    number = str(max(int(v.version) for v in versions))  # the one it was making; any earlier one was completed
    current = holder(client, name, alias)
    if current is not None and str(current.version) == number:
        folder = export_folder(name, number)
        if not storage.sizes(folder):
            _export(name, number, storage, folder)
        return [f"model '{name}': the interrupted registration of v{number} was finished ({alias}, exported)"]
    client.delete_model_version(name, number)
    return [
        f"model '{name}': v{number} (run {run_id}) was left without '{alias}' by an interrupted registration "
        "and was deleted"
    ]


def _export(name: str, number: str, storage: Storage, folder: str) -> None:
    import mlflow

    with tempfile.TemporaryDirectory(prefix="mlops-model-") as tmp:
        local = Path(mlflow.artifacts.download_artifacts(f"models:/{name}/{number}", dst_path=tmp))
        storage.upload_dir(local, folder)


def settle_on_contact(config: Config, env: Environment, storage: Storage | None = None) -> list[str]:
    """Settle the project model's interrupted registrations in `env`, each said as a warning; cheap when none.

    Only listing `registrations/<model>/` costs anything when nothing was left
    in flight; MLflow is reached only when something was. Call it inside
    :func:`environ.scope`.
    """
    import logging

    from mlops_template.storage import open_storage

    storage = storage or open_storage(env)
    name = config.model.name
    if not any(k.endswith(".json") for k in storage.list(f"{PREFIX}/{name}")):
        return []
    import mlflow

    from mlops_template.tracking.connect import point_at
    from mlops_template.tracking.failures import store_errors

    point_at(env)
    with store_errors(env, registry=True):
        said = settle(mlflow.MlflowClient(), storage, name)
    for line in said:
        logging.getLogger(__name__).warning(line)
    return said
