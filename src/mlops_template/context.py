"""What a step receives: its params, and the only doors to storage, tracking and the registry.

A step that touches the world only through its context runs unchanged on a
laptop, against S3, or in a pod.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import registry
from .config import Config, Environment
from .datasets import FORMATS, content_id
from .errors import StorageError
from .snapshots import Snapshot, SnapshotStore, current_key
from .storage import Storage
from .storage.base import parse_table
from .tracking import TAG_DATA_PREFIX, TAG_GATE, TAG_GATE_REASON, TAG_MODEL_SHA256, TAG_TRAINING_DATA

if TYPE_CHECKING:
    import pandas as pd

RAW_PREFIX = "raw"


@dataclass
class StepContext:
    """Everything one step may use. Built by the runner, one per step run."""

    step: str
    params: dict[str, Any]
    config: Config
    environment: Environment
    storage: Storage
    run_id: str
    pipeline_run_id: str
    log: logging.Logger = field(init=False)
    snapshots: SnapshotStore = field(init=False, repr=False)
    notes: list[str] = field(default_factory=list, init=False)
    _datasets: dict[str, str] = field(default_factory=dict, init=False, repr=False)
    _training: dict[str, str] = field(default_factory=dict, init=False, repr=False)
    _proposal: tuple[str, registry.Decision] | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self.log = logging.getLogger(f"{self.config.package}.{self.step}")
        self.snapshots = SnapshotStore(self.storage)

    # -- data ------------------------------------------------------------------
    def read(self, name: str, *, context: str = "input") -> pd.DataFrame:
        """Read the current version of a dataset and record its snapshot as an input of this step.

        `context="training"` marks the data a model is trained on; the registered
        version then names that snapshot in `mlops.training_data`.
        """
        fmt, data = self._read_current(name)
        snapshot = self.snapshots.adopt(name, data, fmt, run_id=self.run_id, step=self.step)
        df = parse_table(data, self.storage.uri(current_key(name, fmt)))
        self._log_snapshot(snapshot, df, context)
        return df

    def read_snapshot(self, ref: str, *, context: str = "input") -> pd.DataFrame:
        """Read one stored version (`ID`, an id prefix, or `NAME:ID`), verified against its id."""
        snapshot, df = self.snapshots.read(ref)
        self._log_snapshot(snapshot, df, context)
        return df

    def write(self, name: str, df: pd.DataFrame) -> str:
        """Store a dataset as a snapshot and as its new current version, record it as an output; returns its id."""
        stored = self.snapshots.write_table(name, df, run_id=self.run_id, step=self.step)
        self._log_snapshot(stored.snapshot, df, "output")
        return stored.snapshot.id

    def has_raw(self) -> bool:
        """Whether the storage holds raw input files under `raw/`."""
        return bool(self._raw_keys())

    def read_raw(self) -> pd.DataFrame:
        """All CSV and parquet files under the storage's `raw/`, concatenated in name order.

        What was read is kept as a snapshot named `raw`, so a later run can be
        reproduced even after the raw files change.
        """
        import pandas as pd

        keys = self._raw_keys()
        if not keys:
            raise StorageError(
                f"no .csv or .parquet files under {self.storage.uri(RAW_PREFIX)}/; add some or drop read_raw()"
            )
        df = pd.concat([self.storage.read_table(k) for k in keys], ignore_index=True)
        stored = self.snapshots.write_table("raw", df, run_id=self.run_id, step=self.step, current=False)
        self._log_snapshot(stored.snapshot, df, "input")
        return df

    def _raw_keys(self) -> list[str]:
        return [k for k in self.storage.list(RAW_PREFIX) if k.endswith((".csv", ".parquet"))]

    def _read_current(self, name: str) -> tuple[str, bytes]:
        """The bytes of `datasets/<name>.parquet`, or of `.csv` for a CSV added with `mlops data add`."""
        for fmt in FORMATS:
            try:
                return fmt, self.storage.read_bytes(current_key(name, fmt))
            except StorageError as exc:
                if not isinstance(exc.__cause__, FileNotFoundError):
                    raise
        raise StorageError(
            f"dataset '{name}' does not exist at {self.storage.uri(current_key(name, 'parquet'))}; "
            "run the step that writes it first (or the whole pipeline), or `mlops data add` a file"
        )

    def _log_snapshot(self, snapshot: Snapshot, df: pd.DataFrame, context: str) -> None:
        import mlflow

        self._datasets[snapshot.name] = snapshot.id
        if context == "training":
            self._training[snapshot.name] = snapshot.id
        _log_input(df, self.snapshots.uri(snapshot), snapshot.name, snapshot.id, context)
        mlflow.set_tag(TAG_DATA_PREFIX + snapshot.name, snapshot.id)
        if self._training:
            mlflow.set_tag(TAG_TRAINING_DATA, _refs(self._training))

    # -- tracking --------------------------------------------------------------
    def log_metrics(self, metrics: dict[str, float]) -> None:
        import mlflow

        mlflow.log_metrics({k: float(v) for k, v in metrics.items()})

    def log_figure(self, figure: Any, file: str) -> None:
        """Log a matplotlib figure as an image artifact of this step (closing it if pyplot made it)."""
        import sys

        import mlflow

        mlflow.log_figure(figure, file)
        if "matplotlib.pyplot" in sys.modules:  # pyplot keeps figures alive until closed
            sys.modules["matplotlib.pyplot"].close(figure)

    # -- models ----------------------------------------------------------------
    def propose_model(
        self,
        model: Any,
        *,
        input_example: pd.DataFrame,
        metrics: dict[str, float],
        pip_requirements: list[str] | None = None,
    ) -> registry.Decision:
        """Log a trained scikit-learn model and put it to the `[model] gate`.

        Passed: once the step has returned without error, a registry version is
        created (tagged with the ids of the data the step used and the model
        files' sha256), `champion` moves to it and the model is exported to
        `models/<name>/v<version>/`. Failed, or the step fails later: nothing is
        registered. The decision is tagged on this run either way.
        """
        import mlflow

        from .requirements import model_requirements

        self.log_metrics(metrics)
        name = self.config.model.name
        info = mlflow.sklearn.log_model(
            model,
            name="model",
            input_example=input_example,
            signature=mlflow.models.infer_signature(input_example, model.predict(input_example)),
            pip_requirements=pip_requirements or model_requirements(model),
            skops_trusted_types=["sklearn.tree._tree.Tree"],
        )
        client = mlflow.MlflowClient()
        current = registry.champion(client, name)
        decision = registry.evaluate_gate(
            self.config.model.gate,
            metrics,
            champion_version=current.version if current else None,
            champion_value=registry.champion_metric(client, current, self.config.model.gate.metric)
            if current
            else None,
        )
        mlflow.set_tags({TAG_GATE: "passed" if decision.passed else "failed", TAG_GATE_REASON: decision.reason})
        if decision.passed:
            self._proposal = (info.model_uri, decision)
        else:
            self.notes.append(f"gate failed: {decision.reason}; nothing registered")
        return decision

    def _finish(self) -> None:
        """Register the model that passed the gate: called by the runner once the step succeeded."""
        if self._proposal is None:
            return
        import mlflow

        model_uri, decision = self._proposal
        name = self.config.model.name
        with tempfile.TemporaryDirectory(prefix="mlops-model-") as tmp:
            local = Path(mlflow.artifacts.download_artifacts(model_uri, dst_path=tmp))
            tags = {
                TAG_MODEL_SHA256: registry.directory_sha256(local),
                **{TAG_DATA_PREFIX + k: v for k, v in self._datasets.items()},
                **({TAG_TRAINING_DATA: _refs(self._training)} if self._training else {}),
            }
            client = mlflow.MlflowClient()
            previous = registry.champion(client, name)
            version = registry.register(client, name, model_uri, self.run_id, tags)
            try:
                self.storage.upload_dir(str(local), f"models/{name}/v{version.version}")
            except BaseException:
                registry.unregister(client, name, str(version.version), restore=previous)
                raise
        self.notes.append(f"gate passed: {decision.reason}; {name} v{version.version} is champion")

    def _abandon(self, error: BaseException) -> None:
        """The step failed after its model passed the gate: record that nothing was registered."""
        if self._proposal is None:
            return
        import mlflow

        mlflow.set_tags(
            {
                TAG_GATE: "failed",
                TAG_GATE_REASON: f"the step failed after the gate passed ({error}); nothing registered",
            }
        )

    def load_champion(self) -> registry.Champion:
        """The registry's champion, verified against its recorded sha256."""
        import mlflow

        champion = registry.load_champion(mlflow.MlflowClient(), self.config.model.name)
        mlflow.set_tag("mlops.model_version", champion.version)
        self.notes.append(f"model {champion.name} v{champion.version}")
        return champion

    def write_predictions(self, df: pd.DataFrame) -> str:
        """Store predictions as `predictions/<pipeline-run-id>.parquet`; returns its URI."""

        key = f"predictions/{self.pipeline_run_id}.parquet"
        data = self.storage.write_table(key, df)
        _log_input(df, self.storage.uri(key), "predictions", content_id(data), "output")
        self.notes.append(f"{len(df)} predictions → {self.storage.uri(key)}")
        return self.storage.uri(key)


def _refs(snapshots: dict[str, str]) -> str:
    return ",".join(f"{name}:{sid}" for name, sid in sorted(snapshots.items()))


def _log_input(df: pd.DataFrame, uri: str, name: str, digest: str, context: str) -> None:
    """Log a dataset on the active run: digest = our content id, source = the stored file."""
    import warnings

    import mlflow

    with warnings.catch_warnings():
        # MLflow registers local files under two equivalent source types and warns that it picked one.
        warnings.filterwarnings("ignore", message="The specified dataset source can be interpreted")
        # A hint about model input schemas, not about a stored dataset.
        warnings.filterwarnings("ignore", message="Hint: Inferred schema contains integer column")
        mlflow.log_input(mlflow.data.from_pandas(df, source=uri, name=name, digest=digest), context=context)
