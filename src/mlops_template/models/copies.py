"""A version's copy in another environment: a logged model of a `promote` run, found again or made and verified.

The copy carries where it came from (`mlops.promoted_from`, …) and the source's
sha256; it is READY only once every file is stored and read back with that
sha256, and removed with its run if anything fails before. The gate's decision
is tagged on it and on its run.
"""

from __future__ import annotations

import getpass
import tempfile
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from mlops_template.config.load import Environment
from mlops_template.errors import IntegrityError
from mlops_template.models import model_files, registry
from mlops_template.models.origin import Origin
from mlops_template.redact import redact, redact_text
from mlops_template.tracking.tags import (
    TAG_DATA_PREFIX,
    TAG_ENVIRONMENT,
    TAG_GATE,
    TAG_GATE_DATA,
    TAG_GATE_REASON,
    TAG_HELDOUT_DATA,
    TAG_MODEL_SHA256,
    TAG_PROMOTED_AT,
    TAG_PROMOTED_BY,
    TAG_PROMOTED_FROM,
    TAG_PROMOTED_RUN,
    TAG_PROMOTED_URI,
    TAG_TRAINING_DATA,
)

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion

    from mlops_template.models.gate import Decision


def earlier_copy(client: MlflowClient, experiment_id: str, origin: Origin) -> Any | None:  # a LoggedModel
    """The complete logged model an earlier promotion of the same version (same files) left in the target."""
    found = client.search_logged_models(
        [experiment_id], filter_string=f"tags.`{TAG_PROMOTED_FROM}` = '{origin.ref}'", max_results=100
    )
    complete = [m for m in found if m.tags.get(TAG_MODEL_SHA256) == origin.sha256 and str(m.status).endswith("READY")]
    return min(complete, key=lambda m: m.creation_timestamp, default=None)


def registered_copy(client: MlflowClient, name: str, origin: Origin) -> ModelVersion | None:
    """The version an earlier promotion of the same version (same files) registered in the target, the first one."""
    from mlflow.exceptions import MlflowException

    try:
        versions = client.search_model_versions(f"name='{name}'")
    except MlflowException as exc:
        if exc.error_code in registry.MISSING:
            return None
        raise
    same = [
        v
        for v in versions
        if v.tags.get(TAG_PROMOTED_FROM) == origin.ref and v.tags.get(TAG_MODEL_SHA256) == origin.sha256
    ]
    return min(same, key=lambda v: int(v.version), default=None)


def provenance(origin: Origin) -> dict[str, str]:
    """Where a copy came from, who made it and when: tagged on its run, logged model and version."""
    try:
        who = getpass.getuser()
    except (KeyError, OSError):  # no user name for this uid (a container)
        who = "unknown"
    return {
        TAG_PROMOTED_FROM: origin.ref,
        TAG_PROMOTED_RUN: origin.run_id or "",
        TAG_PROMOTED_URI: redact(origin.env.tracking_uri),
        TAG_PROMOTED_BY: who,
        TAG_PROMOTED_AT: datetime.now(UTC).isoformat(timespec="seconds"),
    }


def copy_model(client: MlflowClient, experiment_id: str, env: Environment, origin: Origin) -> tuple[str, str]:
    """The model files as a logged model of a `promote` run: READY only once stored and verified; else removed."""
    tags = provenance(origin)
    run = client.create_run(experiment_id, run_name=f"promote {origin.ref}", tags={**tags, TAG_ENVIRONMENT: env.name})
    run_id, model = run.info.run_id, None
    try:
        model = client.create_logged_model(
            experiment_id, name="model", source_run_id=run_id, tags={**tags, TAG_MODEL_SHA256: origin.sha256}
        )
        client.log_model_artifacts(model.model_id, str(origin.folder))
        _verify_copy(env, model.model_id, origin)
        client.finalize_logged_model(model.model_id, "READY")
    except BaseException:
        _discard(client, run_id, model.model_id if model else None)
        raise
    return run_id, model.model_id


def _verify_copy(env: Environment, model_id: str, origin: Origin) -> None:
    import mlflow

    with tempfile.TemporaryDirectory(prefix="mlops-promoted-") as tmp:
        path = mlflow.artifacts.download_artifacts(f"models:/{model_id}", dst_path=tmp)
        actual = model_files.sha256(path)
    if actual != origin.sha256:
        raise IntegrityError(
            f"environment '{env.name}': the stored copy of {origin.ref} does not match its {TAG_MODEL_SHA256} "
            f"({actual[:12]} != {origin.sha256[:12]}); it was removed: check the artifact store and promote again"
        )


def _discard(client: MlflowClient, run_id: str, model_id: str | None) -> None:
    """Remove an unfinished copy (best effort: the error that stopped it is the one to report)."""
    for undo in (
        (lambda: client.delete_logged_model(model_id)) if model_id else None,
        lambda: client.delete_run(run_id),
    ):
        if undo is None:
            continue
        try:
            undo()
        except Exception:  # noqa: BLE001, S112 - cleanup after a failure; the first error is raised
            continue


def version_tags(origin: Origin) -> dict[str, str]:
    """The tags of the copy's registered version: its files' sha256, its snapshots and where it came from."""
    return {
        TAG_MODEL_SHA256: origin.sha256,
        **{TAG_DATA_PREFIX + s.name: s.id for s in origin.snapshots},
        TAG_TRAINING_DATA: origin.tags.get(TAG_TRAINING_DATA, ""),
        **({TAG_HELDOUT_DATA: origin.tags[TAG_HELDOUT_DATA]} if TAG_HELDOUT_DATA in origin.tags else {}),
        **provenance(origin),
    }


def record(client: MlflowClient, run_id: str | None, model_id: str | None, decision: Decision, gate_data: str) -> None:
    """The decision on the logged model and on its run (whose metric is the copy's score in the target)."""
    tag_decision(client, run_id, model_id, decision, gate_data)
    if not run_id:
        return
    if decision.value is not None:
        client.log_metric(run_id, decision.metric, decision.value)
    client.set_terminated(run_id, "FINISHED")


def tag_decision(
    client: MlflowClient, run_id: str | None, model_id: str | None, decision: Decision, gate_data: str
) -> None:
    """The gate's decision and the rows it scored, as tags of the logged model and of its run."""
    tags = {
        TAG_GATE: "passed" if decision.passed else "failed",
        TAG_GATE_REASON: redact_text(decision.reason),
        TAG_GATE_DATA: gate_data,
    }
    if model_id:
        client.set_logged_model_tags(model_id, tags)
    if run_id:
        for key, value in tags.items():
            client.set_tag(run_id, key, value)
