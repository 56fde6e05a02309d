"""Promotion between environments: a registered version of one environment becomes one of another's.

The version's model files are copied byte for byte (their sha256 checked
against its `mlops.model_sha256` before the copy and again once stored), with
the snapshots it was trained on and its held-out snapshot; then the target's
own gate decides, scoring the copy and the target's champion on the same rows.
Everything in the source is checked before the target is written, and in the
target, in this order:

1. the snapshots it lacks, each staged, its digest verified, its manifest last;
2. the model files, as a logged model that stays PENDING until every file is
   stored and read back with the right sha256 (deleted, with its run, if not);
3. the gate's decision, tagged on that logged model and its run;
4. only if it passed: a registered version, then the alias, then the export to
   `models/<name>/v<version>/` (a failure there removes the version again).

A second promotion of the same version finds the first copy (tag
`mlops.promoted_from` and the same sha256): nothing is copied or registered
again, only the decision is made anew.
"""

from __future__ import annotations

import getpass
import tempfile
import time
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlops_template.config import environ
from mlops_template.config.load import Config, Environment
from mlops_template.data.layout import Snapshot
from mlops_template.data.snapshots import SnapshotStore
from mlops_template.errors import ConfigError, IntegrityError, ModelError, StorageError, TrackingError
from mlops_template.models import registry
from mlops_template.models.gate import Comparison, Decision, evaluate_gate, unseen_rows
from mlops_template.redact import redact
from mlops_template.storage import open_storage
from mlops_template.tracking.connect import connect, point_at
from mlops_template.tracking.failures import store_errors
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
    import pandas as pd
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion


_MISSING = ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND")


@dataclass(frozen=True)
class Promotion:
    """What a promotion did (with `dry_run`, what it would do)."""

    model: str
    source: str  # environment names
    target: str
    source_version: str
    alias: str
    decision: Decision | None  # None: the copy already carried the alias, nothing was decided
    version: str | None = None  # the target's registered version (None: refused, or a dry run)
    copied: list[str] = field(default_factory=list)  # snapshots copied (dry run: to copy), `name:id`
    present: list[str] = field(default_factory=list)  # snapshots the target held already
    model_copied: bool = False  # False: an earlier copy was found (dry run: would be copied)
    moved: bool = False  # the alias now points at the copy (and did not before)
    dry_run: bool = False
    gate_data: str = ""  # the rows the gate scored, `name:id`
    seconds: float = 0.0

    @property
    def passed(self) -> bool:
        return self.decision is None or self.decision.passed


@dataclass
class _Origin:
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


@environ.scoped
def promote_between(
    config: Config,
    version: str,
    *,
    source: str,
    target: str,
    alias: str = registry.CHAMPION,
    evaluate: str | None = None,
    dry_run: bool = False,
) -> Promotion:
    """Copy `version` of the project's model from environment `source` to `target`, where the gate decides.

    The gate scores the copy on the held-out snapshot copied along (or on
    `target`'s current dataset `evaluate`) and, for `champion`, the target's
    champion on the same rows less those it trained on. Passed: a version is
    registered in `target` and `alias` points at it; another alias than
    `champion` is moved by `min` alone. Refused: nothing is registered, the copy
    stays a logged model tagged `mlops.gate=failed`. `dry_run` checks both
    environments and decides without writing anything.
    """
    started = time.perf_counter()
    src, tgt = _environments(config, source, target)
    version = str(version).removeprefix("v")
    with tempfile.TemporaryDirectory(prefix="mlops-promote-") as tmp:
        with environ.activate(src):
            origin = _read_source(config, src, version, Path(tmp) / "model", need_heldout=evaluate is None)
        with environ.activate(tgt):
            result = _into_target(config, tgt, origin, alias=alias, evaluate=evaluate, dry_run=dry_run)
    return replace(result, seconds=time.perf_counter() - started)


def _environments(config: Config, source: str, target: str) -> tuple[Environment, Environment]:
    if source == target:
        raise ConfigError(
            f"--from and --to are both '{source}'; to move an alias inside one environment, "
            f"`mlops promote VERSION --environment {source} [--alias A]`"
        )
    src, tgt = config.environment(source), config.environment(target)
    for what, a, b in (
        ("tracking store", src.tracking_uri, tgt.tracking_uri),
        ("model registry", src.registry_uri or src.tracking_uri, tgt.registry_uri or tgt.tracking_uri),
        ("storage", src.storage, tgt.storage),
    ):
        if a == b:
            raise ConfigError(
                f"environments '{source}' and '{target}' share one {what} ({redact(a)}), so nothing would move; "
                "give each its own in mlops.toml, or unset the variable that overrides both "
                "(MLFLOW_TRACKING_URI, MLFLOW_REGISTRY_URI, MLOPS_STORAGE)"
            )
    return src, tgt


# -- the source ----------------------------------------------------------------------------------


def _read_source(config: Config, env: Environment, version: str, folder: Path, *, need_heldout: bool) -> _Origin:
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
    training = [_source_snapshot(store, env, name, version, ref) for ref in _refs(tags.get(TAG_TRAINING_DATA))]
    heldout = _source_snapshot(store, env, name, version, heldout_ref) if heldout_ref else None
    with store_errors(env, registry=True):
        path = Path(mlflow.artifacts.download_artifacts(f"models:/{name}/{version}", dst_path=str(folder)))
        params = dict(client.get_run(found.run_id).data.params) if found.run_id else {}
    registry.drop_download_notes(path)
    actual = registry.directory_sha256(path)
    if actual != sha256:
        raise IntegrityError(
            f"environment '{env.name}': the files of {name} v{version} do not match its {TAG_MODEL_SHA256} "
            f"({actual[:12]} != {sha256[:12]}): they were changed after registration; nothing was copied, "
            "restore them or promote another version"
        )
    return _Origin(env, version, found.run_id, tags, sha256, path, store, training, heldout, params)


def _source_version(client: MlflowClient, env: Environment, name: str, version: str) -> ModelVersion:
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version(name, version)
    except MlflowException as exc:
        if exc.error_code not in _MISSING:
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


def _refs(value: str | None) -> list[str]:
    return [ref for ref in (value or "").split(",") if ref]


# -- the target ----------------------------------------------------------------------------------


def _into_target(
    config: Config, env: Environment, origin: _Origin, *, alias: str, evaluate: str | None, dry_run: bool
) -> Promotion:
    import mlflow

    name = config.model.name
    store = SnapshotStore(open_storage(env, check=True))
    point_at(env)
    client = mlflow.MlflowClient()
    present = [s.ref for s in origin.snapshots if store.find(s.name, s.digest) is not None]
    missing = [s for s in origin.snapshots if s.ref not in present]
    with store_errors(env, registry=True):
        experiment = client.get_experiment_by_name(config.name)
        earlier = _earlier_copy(client, experiment.experiment_id, origin) if experiment else None
        registered = _registered_copy(client, name, origin)
        holder = _alias_holder(client, name, alias)
    if registered is not None:  # the registered copy's own logged model, whatever else an earlier attempt left
        earlier = (registered.run_id, registry.logged_model_id(registered.source))
    elif earlier is not None:
        earlier = (earlier.source_run_id, earlier.model_id)
    common = dict(
        model=name,
        source=origin.env.name,
        target=env.name,
        source_version=origin.version,
        alias=alias,
        present=present,
        model_copied=earlier is None,
        dry_run=dry_run,
    )
    if registered is not None and holder == str(registered.version):
        return Promotion(decision=None, version=holder, **common)  # done before: nothing to copy or decide

    # Decided before anything is written, on the source's bytes of the snapshots (the digest makes them the
    # target's): a model the gate cannot judge leaves the target untouched.
    rows, gate_data = _rows(env, store, origin, evaluate)
    decision = _judge(config, client, store, origin, rows, gate_data, alias=alias)
    result = Promotion(decision=decision, copied=[s.ref for s in missing], gate_data=gate_data, **common)
    if dry_run:
        return result

    experiment_id = connect(config, env)
    for snapshot in missing:
        store.copy_from(origin.store, snapshot)
    with store_errors(env):
        run_id, model_id = earlier or _copy_model(client, experiment_id, env, origin)
        _record(client, run_id, model_id, decision, gate_data)
    if not decision.passed:
        return result
    if registered is not None:
        version = str(registered.version)
        _move_alias(client, env, name, alias, version, decision, config)
    else:
        version = _register(client, env, config, origin, store, model_id, run_id, alias, decision)
    return replace(result, version=version, moved=True)


def _earlier_copy(client: MlflowClient, experiment_id: str, origin: _Origin) -> Any | None:  # a LoggedModel
    """The complete logged model an earlier promotion of the same version (same files) left in the target."""
    found = client.search_logged_models(
        [experiment_id], filter_string=f"tags.`{TAG_PROMOTED_FROM}` = '{origin.ref}'", max_results=100
    )
    complete = [m for m in found if m.tags.get(TAG_MODEL_SHA256) == origin.sha256 and str(m.status).endswith("READY")]
    return min(complete, key=lambda m: m.creation_timestamp, default=None)


def _registered_copy(client: MlflowClient, name: str, origin: _Origin) -> ModelVersion | None:
    from mlflow.exceptions import MlflowException

    try:
        versions = client.search_model_versions(f"name='{name}'")
    except MlflowException as exc:
        if exc.error_code in _MISSING:
            return None
        raise
    same = [
        v
        for v in versions
        if v.tags.get(TAG_PROMOTED_FROM) == origin.ref and v.tags.get(TAG_MODEL_SHA256) == origin.sha256
    ]
    return min(same, key=lambda v: int(v.version), default=None)


def _alias_holder(client: MlflowClient, name: str, alias: str) -> str | None:
    from mlflow.exceptions import MlflowException

    try:
        return str(client.get_model_version_by_alias(name, alias).version)
    except MlflowException as exc:
        if exc.error_code in _MISSING:
            return None
        raise


def _provenance(origin: _Origin) -> dict[str, str]:
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


def _copy_model(client: MlflowClient, experiment_id: str, env: Environment, origin: _Origin) -> tuple[str, str]:
    """The model files as a logged model of a `promote` run: READY only once stored and verified; else removed."""
    tags = _provenance(origin)
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


def _verify_copy(env: Environment, model_id: str, origin: _Origin) -> None:
    import mlflow

    with tempfile.TemporaryDirectory(prefix="mlops-promoted-") as tmp:
        path = mlflow.artifacts.download_artifacts(f"models:/{model_id}", dst_path=tmp)
        actual = registry.directory_sha256(path)
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


# -- the gate ------------------------------------------------------------------------------------


def _rows(env: Environment, store: SnapshotStore, origin: _Origin, evaluate: str | None) -> tuple[pd.DataFrame, str]:
    """The rows the gate scores and their `name:id`: the held-out snapshot copied along, or the target's `evaluate`."""
    if evaluate is None:
        assert origin.heldout is not None  # checked while reading the source
        return origin.store.read(origin.heldout)[1], origin.heldout.ref
    try:
        snapshot, rows = store.read(evaluate)
    except StorageError as exc:
        raise StorageError(f"environment '{env.name}': --evaluate {evaluate}: {exc}") from exc
    return rows, snapshot.ref


def _judge(
    config: Config,
    client: MlflowClient,
    store: SnapshotStore,
    origin: _Origin,
    rows: pd.DataFrame,
    gate_data: str,
    *,
    alias: str,
) -> Decision:
    """The target's gate on the copy: `min` on the rows it did not train on; for `champion`, beat the champion there."""
    from mlops_template.models.scoring import score
    from mlops_template.models.targets import check_target

    gate, task = config.model.gate, config.model.task
    if alias != registry.CHAMPION:
        gate = replace(gate, beat_champion=False)
    model, features = registry.load_folder(origin.folder)
    target = _target_column(rows, features, origin.params, gate_data)
    check_target(rows, target, task, table=gate_data)
    for snapshot in origin.training:
        rows = unseen_rows(rows, origin.store.read(snapshot)[1])
    if rows.empty:
        return Decision(
            False,
            f"every row of {gate_data} is in the training data of {origin.ref}, so it cannot be judged on them; "
            "name other rows with --evaluate NAME",
            gate.metric,
            None,
        )
    X, y = rows.drop(columns=[target]), rows[target]
    value = score(model, X[features] if features else X, y, gate.metric, task=task)
    comparison = None
    current = registry.champion(client, config.model.name) if gate.beat_champion else None
    if current is not None:
        comparison = _compare(config, client, store, current, rows, target, model, features)
    return evaluate_gate(gate, value, rows=len(rows), comparison=comparison)


def _target_column(rows: pd.DataFrame, features: list[str] | None, params: dict[str, str], gate_data: str) -> str:
    """The column the model predicts: the one its signature does not take, else the training run's `target` param."""
    if features:
        rest = [c for c in rows.columns if c not in set(features)]
        if len(rest) == 1:
            return rest[0]
    if params.get("target") in rows.columns:
        return params["target"]
    raise ModelError(
        f"cannot tell which column of {gate_data} the model predicts (its signature does not leave exactly one, "
        "and its training run has no `target` param naming one); promote with --evaluate NAME of a table "
        "holding only the model's inputs and its target"
    )


def _compare(
    config: Config,
    client: MlflowClient,
    store: SnapshotStore,
    current: ModelVersion,
    rows: pd.DataFrame,
    target: str,
    model: Any,
    features: list[str] | None,
) -> Comparison:
    """The copy and the target's champion scored with the gate metric on the rows neither trained on."""
    from mlops_template.models.gate import compare_with_champion

    champion = registry.load_version(client, config.model.name, current)
    return compare_with_champion(
        champion,
        rows,
        target,
        candidate=model,
        candidate_features=features,
        read=lambda ref: store.read(ref)[1],
        metric=config.model.gate.metric,
        task=config.model.task,
    )


def _record(client: MlflowClient, run_id: str | None, model_id: str | None, decision: Decision, gate_data: str) -> None:
    """The decision on the logged model and on its run (whose metric is the copy's score in the target)."""
    tags = {TAG_GATE: "passed" if decision.passed else "failed", TAG_GATE_REASON: decision.reason}
    if model_id:
        client.set_logged_model_tags(model_id, {**tags, TAG_GATE_DATA: gate_data})
    if not run_id:
        return
    for key, value in {**tags, TAG_GATE_DATA: gate_data}.items():
        client.set_tag(run_id, key, value)
    if decision.value is not None:
        client.log_metric(run_id, decision.metric, decision.value)
    client.set_terminated(run_id, "FINISHED")


# -- registration --------------------------------------------------------------------------------


def _register(
    client: MlflowClient,
    env: Environment,
    config: Config,
    origin: _Origin,
    store: SnapshotStore,
    model_id: str,
    run_id: str | None,
    alias: str,
    decision: Decision,
) -> str:
    """Register the copy, point `alias` at it and export its files; any failure on the way removes the version."""
    name = config.model.name
    tags = {
        TAG_MODEL_SHA256: origin.sha256,
        **{TAG_DATA_PREFIX + s.name: s.id for s in origin.snapshots},
        TAG_TRAINING_DATA: origin.tags.get(TAG_TRAINING_DATA, ""),
        **({TAG_HELDOUT_DATA: origin.tags[TAG_HELDOUT_DATA]} if TAG_HELDOUT_DATA in origin.tags else {}),
        **_provenance(origin),
    }
    with store_errors(env, registry=True):
        version = str(registry.create_version(client, name, f"models:/{model_id}", run_id, tags).version)
    previous = None
    try:
        previous = _move_alias(client, env, name, alias, version, decision, config)
        store.storage.upload_dir(origin.folder, f"models/{name}/v{version}")
    except BaseException:
        with store_errors(env, registry=True):
            registry.unregister(client, name, version, restore=None)
            if previous is not None:
                registry.set_alias(client, name, alias, previous)
        raise
    return version


def _move_alias(
    client: MlflowClient, env: Environment, name: str, alias: str, version: str, decision: Decision, config: Config
) -> str | None:
    """Point `alias` at `version`, refusing if `champion` moved since the gate compared against it; returns the alias's previous version."""
    with store_errors(env, registry=True):
        previous = _alias_holder(client, name, alias)
        if (
            alias == registry.CHAMPION
            and config.model.gate.beat_champion
            and previous != (decision.champion_version or None)
        ):
            raise TrackingError(
                f"environment '{env.name}': '{alias}' of '{name}' moved to v{previous} while the gate was deciding; "
                "promote again to be judged against it"
            )
        registry.set_alias(client, name, alias, version)
    return previous
