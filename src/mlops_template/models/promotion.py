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
4. only if it passed, the registry's one registration flow (`registry.register`):
   a registered version; `champion` read again, and if it moved meanwhile the
   gate decides again against the new one (refused: the version is removed);
   then the alias, then the export to `models/<name>/v<version>/` (a failure
   there removes the version again).

The source is read and checked in `models.origin`; the copy is made, found
again and tagged in `models.copies`.

A second promotion of the same version finds the first copy (tag
`mlops.promoted_from` and the same sha256): nothing is copied or registered
again, only the decision is made anew.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

from mlops_template.config import environ
from mlops_template.config.load import Config, Environment
from mlops_template.data.snapshots import SnapshotStore
from mlops_template.errors import ConfigError, ModelError, StorageError
from mlops_template.models import registry
from mlops_template.models.copies import (
    copy_model,
    earlier_copy,
    record,
    registered_copy,
    tag_decision,
    version_tags,
)
from mlops_template.models.gate import Decision, decide, unseen_rows
from mlops_template.models.isolation import Recorded, outputs_apart
from mlops_template.models.origin import Origin, read_origin
from mlops_template.models.trust import Trust, route
from mlops_template.redact import redact
from mlops_template.storage import open_storage
from mlops_template.tracking.connect import connect, point_at
from mlops_template.tracking.failures import store_errors

if TYPE_CHECKING:
    import pandas as pd
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion


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
            origin = read_origin(config, src, version, Path(tmp) / "model", need_heldout=evaluate is None)
        route(origin.folder, _trust(config, tgt), what=f"{config.model.name} {origin.ref}")  # before any write
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


# -- the target ----------------------------------------------------------------------------------


def _into_target(
    config: Config, env: Environment, origin: Origin, *, alias: str, evaluate: str | None, dry_run: bool
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
        earlier = earlier_copy(client, experiment.experiment_id, origin) if experiment else None
        registered = registered_copy(client, name, origin)
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
    rows = rows.reset_index(drop=True)
    trust = _trust(config, env)
    candidate = outputs_apart(origin.folder, rows, trust, what=f"{name} {origin.ref}")

    def judge(current: ModelVersion | None) -> Decision:
        return _judge(config, env, client, store, origin, rows, gate_data, candidate, alias=alias, current=current)

    decision = judge(registry.champion(client, name) if alias == registry.CHAMPION else None)
    result = Promotion(decision=decision, copied=[s.ref for s in missing], gate_data=gate_data, **common)
    if dry_run:
        return result

    experiment_id = connect(config, env)
    for snapshot in missing:
        store.copy_from(origin.store, snapshot)
    with store_errors(env):
        run_id, model_id = earlier or copy_model(client, experiment_id, env, origin)
        record(client, run_id, model_id, decision, gate_data)
    if not decision.passed:
        return result
    done = registry.register(
        client,
        name,
        decision,
        regate=judge,
        record=lambda again: tag_decision(client, run_id, model_id, again, gate_data),
        alias=alias,
        beat_champion=config.model_in(env.name).gate.beat_champion,
        model_uri=f"models:/{model_id}",
        run_id=run_id,
        tags=version_tags(origin),
        existing=str(registered.version) if registered is not None else None,
        export=(store.storage, origin.folder),
    )
    return replace(result, decision=done.decision, version=done.version, moved=done.version is not None)


def _alias_holder(client: MlflowClient, name: str, alias: str) -> str | None:
    from mlflow.exceptions import MlflowException

    try:
        return str(client.get_model_version_by_alias(name, alias).version)
    except MlflowException as exc:
        if exc.error_code in registry.MISSING:
            return None
        raise


# -- the gate ------------------------------------------------------------------------------------


def _rows(env: Environment, store: SnapshotStore, origin: Origin, evaluate: str | None) -> tuple[pd.DataFrame, str]:
    """The rows the gate scores and their `name:id`: the held-out snapshot copied along, or the target's `evaluate`."""
    if evaluate is None:
        assert origin.heldout is not None  # checked while reading the source
        return origin.store.read(origin.heldout)[1], origin.heldout.ref
    try:
        snapshot, rows = store.read(evaluate)
    except StorageError as exc:
        raise StorageError(f"environment '{env.name}': --evaluate {evaluate}: {exc}") from exc
    return rows, snapshot.ref


def _trust(config: Config, env: Environment) -> Trust:
    return Trust.of(config.model_in(env.name), env.name)


def _judge(
    config: Config,
    env: Environment,
    client: MlflowClient,
    store: SnapshotStore,
    origin: Origin,
    rows: pd.DataFrame,
    gate_data: str,
    model: Recorded,
    *,
    alias: str,
    current: ModelVersion | None,
) -> Decision:
    """The target's gate on the copy: `min` on the rows it did not train on; for `champion`, beat the champion there.

    `model` is the copy's outputs on `rows`, computed apart; the target's
    champion, its own registered model, is loaded here as the target trusts.
    """
    from mlops_template.models.scoring import score
    from mlops_template.models.targets import check_target

    settings = config.model_in(env.name)
    gate, task = settings.gate, settings.task
    if alias != registry.CHAMPION:
        gate = replace(gate, beat_champion=False)
    features = registry.input_names(origin.folder)
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
    return decide(
        gate,
        value,
        rows,
        target,
        current=current,
        load=lambda version: registry.load_version(client, config.model.name, version, _trust(config, env)),
        candidate=model,
        candidate_features=features,
        read=lambda ref: store.read(ref)[1],
        task=task,
    )


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
