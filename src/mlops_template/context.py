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
from .datasets import content_id, dataset_key
from .errors import StorageError
from .storage import Storage
from .storage.base import parse_table
from .tracking import TAG_DATA_PREFIX, TAG_GATE, TAG_GATE_REASON, TAG_MODEL_SHA256

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
    notes: list[str] = field(default_factory=list, init=False)
    _datasets: dict[str, str] = field(default_factory=dict, init=False, repr=False)
    _proposal: tuple[str, registry.Decision] | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self.log = logging.getLogger(f"{self.config.package}.{self.step}")

    # -- data ------------------------------------------------------------------
    def read(self, name: str, *, context: str = "input") -> pd.DataFrame:
        """Read the current version of a dataset and record it as an input of this step."""
        key = dataset_key(name)
        try:
            data = self.storage.read_bytes(key)
        except StorageError as exc:
            if not isinstance(exc.__cause__, FileNotFoundError):
                raise
            raise StorageError(
                f"dataset '{name}' does not exist at {self.storage.uri(key)}; "
                "run the step that writes it first (or the whole pipeline)"
            ) from exc
        df = parse_table(data, self.storage.uri(key))
        self._log_dataset(name, df, content_id(data), key, context)
        return df

    def write(self, name: str, df: pd.DataFrame) -> str:
        """Store a dataset as its new current version, record it as an output; returns its id."""
        key = dataset_key(name)
        data = self.storage.write_table(key, df)
        digest = content_id(data)
        self._log_dataset(name, df, digest, key, "output")
        return digest

    def has_raw(self) -> bool:
        """Whether the storage holds raw input files under `raw/`."""
        return bool(self._raw_keys())

    def read_raw(self) -> pd.DataFrame:
        """All CSV and parquet files under the storage's `raw/`, concatenated in name order."""
        import pandas as pd

        keys = self._raw_keys()
        if not keys:
            raise StorageError(
                f"no .csv or .parquet files under {self.storage.uri(RAW_PREFIX)}/; add some or drop read_raw()"
            )
        files = {k: self.storage.read_bytes(k) for k in keys}
        df = pd.concat([parse_table(data, self.storage.uri(k)) for k, data in files.items()], ignore_index=True)
        self._log_dataset("raw", df, content_id(b"".join(files.values())), RAW_PREFIX, "input")
        return df

    def _raw_keys(self) -> list[str]:
        return [k for k in self.storage.list(RAW_PREFIX) if k.endswith((".csv", ".parquet"))]

    def _log_dataset(self, name: str, df: pd.DataFrame, digest: str, key: str, context: str) -> None:
        import mlflow

        self._datasets[name] = digest
        _log_input(df, self.storage.uri(key), name, digest, context)
        mlflow.set_tag(TAG_DATA_PREFIX + name, digest)

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
