"""Pipeline runs that several processes share, found by their key.

A pipeline run is one MLflow parent run with a nested run per step attempt.
Steps started in separate processes or pods with the same key join it. The
key's record, `pipeline-runs/<key>.json` in the environment's storage, names
the parent run. MLflow cannot create a run only if none exists, so the record
is written with the storage's conditional create (a hard link on a local
disk, `If-None-Match` on S3): each process that finds no record creates a
parent run and tries to write the record; the one whose write lands owns the
parent, the others delete their run and join it. That holds whatever the
tracking store, and whatever the processes' clocks say.

Within a pipeline run a step reads, by name, the snapshot that the latest
successful attempt of an earlier step wrote (each attempt tags what it wrote
`mlops.output.<name>`). A name no step of the run wrote is read from the
current version once and pinned to the key (`pipeline-runs/<key>/pins/`), so
a retried step reads the same bytes.

Each attempt keeps a lease alive with a heartbeat tag; an attempt killed
without cleaning up (SIGKILL, out of memory) is marked FAILED by the next
attempt of the same step once its lease has lapsed, never while it lives, or
else by the next pipeline run in the environment (:func:`sweep_lost`).
"""

from __future__ import annotations

import json
import logging
import os
import re
import secrets
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from mlops_template.errors import ConfigError, StorageError, TrackingError
from mlops_template.redact import redact_text
from mlops_template.tracking.tags import (
    TAG_HEARTBEAT,
    TAG_LOST,
    TAG_OUTPUT_PREFIX,
    TAG_PARENT,
    TAG_PIPELINE,
    TAG_PIPELINE_RUN,
    TAG_STEP,
    TAG_STEPS,
)

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities import Run

    from mlops_template.storage import Storage

logger = logging.getLogger(__name__)

KEY_VARIABLE = "MLOPS_PIPELINE_RUN"
LEASE_VARIABLE = "MLOPS_STEP_LEASE"
DEFAULT_LEASE = 60.0
RECORDS = "pipeline-runs"


_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:+=@-]{0,199}")
_FAILED = ("FAILED", "KILLED")


def new_key() -> str:
    """A fresh key: when it was made (UTC), then random hex, so keys sort by time and never collide."""
    return f"{datetime.now(UTC):%Y%m%dT%H%M%SZ}-{secrets.token_hex(4)}"


def check_key(key: str) -> str:
    if not _KEY.fullmatch(key):
        raise ConfigError(
            f"pipeline run key '{key}' is not valid; use 1-200 letters, digits and . _ : + = @ - "
            "(no '/' or spaces), starting with a letter or digit"
        )
    return key


def record_key(key: str) -> str:
    return f"{RECORDS}/{check_key(key)}.json"


def pin_key(key: str, name: str) -> str:
    return f"{RECORDS}/{check_key(key)}/pins/{name}.json"


def lease_seconds() -> float:
    """How long an attempt may go without a heartbeat before another attempt of its step may call it lost."""
    raw = os.environ.get(LEASE_VARIABLE)
    if not raw:
        return DEFAULT_LEASE
    try:
        value = float(raw)
    except ValueError:
        value = 0.0
    if value <= 0:
        raise ConfigError(f"{LEASE_VARIABLE}={raw!r} is not a number of seconds above 0; unset it or fix it")
    return value


@dataclass(frozen=True)
class ParentRun:
    """The MLflow run that is a pipeline run, its key and planned steps."""

    key: str
    run_id: str
    plan: tuple[str, ...]
    joined: bool  # made by another process (or an earlier one) under the same key


def open_parent(
    client: MlflowClient,
    storage: Storage,
    experiment_id: str,
    key: str,
    *,
    plan: Sequence[str],
    plan_given: bool,
    tags: dict[str, str],
    run_id: str | None = None,
) -> ParentRun:
    """Join the pipeline run of `key`, or create it when it does not exist yet.

    A new pipeline run is named `<project> <key>`. `run_id` adopts a run that
    already exists (the one `mlflow run` made) as the parent instead of creating one. The plan recorded by whoever created
    the pipeline run stands; a different `plan_given` is an error.
    """
    record = _read_record(storage, key)
    if record is None:
        tags = {**tags, TAG_PIPELINE_RUN: key}
        if run_id is None:
            name = f"{tags[TAG_PIPELINE]} {key}" if TAG_PIPELINE in tags else key  # `<project> <key>` in the UI
            mine = client.create_run(experiment_id, tags=tags, run_name=name).info.run_id
        else:
            mine = run_id
            for name, value in tags.items():
                client.set_tag(mine, name, value)
        body = {"key": key, "run_id": mine, "experiment_id": experiment_id, "plan": list(plan)}
        if storage.create_bytes(record_key(key), json.dumps(body, indent=1).encode()):
            return ParentRun(key, mine, tuple(plan), joined=False)
        if run_id is None:
            client.delete_run(mine)  # another process's record landed first: its run is the parent
        record = _read_record(storage, key)
        if record is None:
            raise StorageError(f"{storage.uri(record_key(key))}: refused as existing, then not found; try again")
    return _join(client, storage, experiment_id, key, record, plan, plan_given)


def _join(client, storage, experiment_id, key, record, plan, plan_given) -> ParentRun:
    from mlflow.exceptions import MlflowException

    run_id = str(record.get("run_id", ""))
    try:
        run = client.get_run(run_id)
    except MlflowException as exc:
        raise TrackingError(
            f"pipeline run '{key}' names run {run_id}, which this environment's tracking store does not have "
            f"({storage.uri(record_key(key))}); use a new key"
        ) from exc
    if run.info.lifecycle_stage == "deleted":
        raise TrackingError(f"pipeline run '{key}': its run {run_id} was deleted; restore it or use a new key")
    if run.info.experiment_id != experiment_id:
        raise TrackingError(
            f"pipeline run '{key}' belongs to another experiment ({run.info.experiment_id}); use a new key"
        )
    recorded = tuple(record.get("plan") or ())
    if plan_given and tuple(plan) != recorded:
        raise ConfigError(
            f"pipeline run '{key}' was planned as {','.join(recorded)}, not {','.join(plan)}; "
            "drop --plan to join it, or use a new key"
        )
    return ParentRun(key, run_id, recorded, joined=True)


def _read_record(storage: Storage, key: str) -> dict | None:
    where = record_key(key)
    try:
        data = storage.read_bytes(where)
    except StorageError as exc:
        if isinstance(exc.__cause__, FileNotFoundError):
            return None
        raise
    try:
        return json.loads(data)
    except ValueError as exc:
        raise StorageError(
            f"{storage.uri(where)}: not a pipeline run record ({exc}); delete it or use a new key"
        ) from exc


# -- attempts and status ----------------------------------------------------------


def attempts(client: MlflowClient, experiment_id: str, parent_run_id: str) -> list[Run]:
    """Every step attempt of a pipeline run (its nested runs), oldest first."""
    runs = client.search_runs(
        [experiment_id], filter_string=f"tags.`{TAG_PARENT}` = '{parent_run_id}'", max_results=5000
    )
    return sorted(runs, key=lambda r: (r.info.start_time or 0, r.info.run_id))


def pipeline_status(plan: Sequence[str], runs: Sequence[Run]) -> str:
    """FAILED if the latest attempt of a planned step failed, FINISHED once all finished, else RUNNING."""
    latest: dict[str, str] = {}
    for run in sorted(runs, key=lambda r: (r.info.start_time or 0, r.info.run_id)):
        step = run.data.tags.get(TAG_STEP)
        if step:
            latest[step] = run.info.status
    statuses = [latest.get(step) for step in plan]
    if any(s in _FAILED for s in statuses):
        return "FAILED"
    if all(s == "FINISHED" for s in statuses):
        return "FINISHED"
    return "RUNNING"


def settle(client: MlflowClient, experiment_id: str, parent: ParentRun) -> str:
    """Set the parent's status from its planned steps' latest attempts, and return it.

    Writers may race (two steps ending at once), so after each write the
    attempts are read again and the status rewritten until it agrees: the
    last writer always writes what it read after every earlier write.
    """
    current = client.get_run(parent.run_id).info.status
    for _ in range(5):
        wanted = pipeline_status(parent.plan, attempts(client, experiment_id, parent.run_id))
        if wanted == current:
            break
        if wanted == "RUNNING":
            client.update_run(parent.run_id, status="RUNNING")
        else:
            client.set_terminated(parent.run_id, wanted)
        current = wanted
    return current


def mark_lost(
    client: MlflowClient, runs: Sequence[Run], step: str, by: str, lease: float, *, supersede: bool = False
) -> list[str]:
    """Mark FAILED the RUNNING attempts of `step` whose heartbeat lapsed more than `lease` seconds ago.

    With `supersede`, every earlier RUNNING attempt is marked at once: the caller knows they are
    over (a scheduler starts a task's next try only after the last one ended).
    """
    now = time.time()
    lost = []
    for run in runs:
        if run.data.tags.get(TAG_STEP) != step or run.info.status != "RUNNING" or run.info.run_id == by:
            continue
        last = last_beat(run)
        if supersede:
            why = "superseded by a retry of the step: the scheduler ended the earlier try, which did not finish"
        elif now - last <= lease:
            continue  # alive, or not yet known to be dead: never touched
        else:
            why = f"no heartbeat for {now - last:.0f} s (lease {lease:g} s): the process was killed or lost"
        marker = by if " " in by else f"attempt {by}"  # a run id: the attempt of the same step that found it
        client.set_tag(run.info.run_id, TAG_LOST, redact_text(f"{why}; marked FAILED by {marker}"))
        client.set_terminated(run.info.run_id, "FAILED", end_time=int(last * 1000))
        lost.append(run.info.run_id)
    return lost


def sweep_lost(client: MlflowClient, experiment_id: str, lease: float, by: str) -> list[str]:
    """Mark FAILED, in the whole experiment, the step runs whose process died (heartbeat lapsed beyond `lease`).

    A step killed with its process, or cut off from a lost server, stays
    RUNNING in MLflow; the next `mlops run` in the environment ends it, and its
    pipeline run's status follows. A live step keeps beating and is left alone.
    """
    running = client.search_runs([experiment_id], filter_string="attributes.status = 'RUNNING'", max_results=1000)
    lost = []
    for run in running:
        step = run.data.tags.get(TAG_STEP)
        if step:
            lost += mark_lost(client, [run], step, f"pipeline run {by}", lease)
    fail_pending_models(client, experiment_id, lost)
    for parent_id in {r.data.tags.get(TAG_PARENT) for r in running if r.info.run_id in lost} - {None}:
        parent = client.get_run(parent_id)
        plan = tuple(parent.data.tags.get(TAG_STEPS, "").split(","))
        settle(client, experiment_id, ParentRun(parent.data.tags.get(TAG_PIPELINE_RUN, ""), parent_id, plan, True))
    return lost


def fail_pending_models(client: MlflowClient, experiment_id: str, run_ids: Sequence[str]) -> None:
    """Mark FAILED the logged models these failed runs left PENDING (a model whose upload never finished)."""
    for run_id in run_ids:
        for model in client.search_logged_models([experiment_id], filter_string=f"source_run_id = '{run_id}'"):
            if str(model.status) == "PENDING":
                client.finalize_logged_model(model.model_id, "FAILED")


def last_beat(run: Run) -> float:
    """When a step attempt last showed it was alive: its heartbeat, else its start."""
    try:
        return float(run.data.tags[TAG_HEARTBEAT])
    except (KeyError, ValueError):
        return (run.info.start_time or 0) / 1000


class Heartbeat:
    """Renews an attempt's lease: `mlops.heartbeat` (epoch seconds) on its run, every third of the lease."""

    def __init__(self, client: MlflowClient, run_id: str, lease: float) -> None:
        self._client, self._run_id, self._interval = client, run_id, lease / 3
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=f"mlops-heartbeat-{run_id[:8]}", daemon=True)

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _beat(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self._client.set_tag(self._run_id, TAG_HEARTBEAT, f"{time.time():.3f}")
            except Exception as exc:  # noqa: BLE001 - a lost beat is retried; the step itself reports store failures
                logger.debug("heartbeat of %s failed: %s", self._run_id, exc)


# -- reads within a pipeline run ---------------------------------------------------


@dataclass
class RunScope:
    """What one step attempt reads by name: earlier steps' outputs in this pipeline run, else pinned versions."""

    storage: Storage
    key: str
    step: str
    order: list[str]
    runs: list[Run] = field(default_factory=list)

    def written(self, name: str) -> str | None:
        """The snapshot id the latest successful attempt of the latest earlier step wrote as `name`."""
        earlier = self.order[: self.order.index(self.step)] if self.step in self.order else []
        best: tuple[tuple[int, int], str] | None = None
        for run in self.runs:
            step = run.data.tags.get(TAG_STEP)
            snapshot = run.data.tags.get(TAG_OUTPUT_PREFIX + name)
            if run.info.status != "FINISHED" or step not in earlier or not snapshot:
                continue
            rank = (earlier.index(step), run.info.start_time or 0)
            if best is None or rank > best[0]:
                best = (rank, snapshot)
        return best[1] if best else None

    def pinned(self, name: str) -> str | None:
        """The snapshot id of `name` this pipeline run read first, if it read one."""
        try:
            data = self.storage.read_bytes(pin_key(self.key, name))
        except StorageError as exc:
            if isinstance(exc.__cause__, FileNotFoundError):
                return None
            raise
        return str(json.loads(data)["snapshot"])

    def pin(self, name: str, snapshot_id: str, run_id: str) -> str:
        """Pin `snapshot_id` as this pipeline run's `name`; returns the pinned id (another's if it came first)."""
        body = {"name": name, "snapshot": snapshot_id, "run_id": run_id, "step": self.step}
        if self.storage.create_bytes(pin_key(self.key, name), json.dumps(body).encode()):
            return snapshot_id
        return self.pinned(name) or snapshot_id
