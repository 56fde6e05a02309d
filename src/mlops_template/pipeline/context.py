"""What a step receives: its params, and the only doors to storage, tracking and the registry.

A step that touches the world only through its context runs unchanged on a
laptop, against S3, or in a pod.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from mlops_template.config.load import Config, Environment
from mlops_template.data import engines
from mlops_template.data.hashing import FORMATS, content_id
from mlops_template.data.layout import Snapshot, current_key, current_parts_folder
from mlops_template.data.raw import RAW_PREFIX
from mlops_template.data.snapshots import SnapshotStore
from mlops_template.data.tables import parse_table, write_table
from mlops_template.errors import DataError, StorageError
from mlops_template.models.gate import Decision
from mlops_template.pipeline.cache import Reads
from mlops_template.pipeline.coordination import RunScope
from mlops_template.pipeline.proposal import Candidate, Proposals, refs
from mlops_template.pipeline.replay import Replay
from mlops_template.pipeline.sources import Sources
from mlops_template.progress import activity
from mlops_template.storage import Storage
from mlops_template.tracking.tags import (
    TAG_DATA_PREFIX,
    TAG_OUTPUT_PREFIX,
    TAG_OUTPUT_URI_PREFIX,
    TAG_TRAINING_DATA,
)

if TYPE_CHECKING:
    import pandas as pd
    from dask.dataframe import DataFrame as DaskFrame


@dataclass
class StepContext(Proposals, Sources):
    """Everything one step may use. Built by the runner, one per step run."""

    step: str
    params: dict[str, Any]
    config: Config
    environment: Environment
    storage: Storage
    run_id: str
    pipeline_run_id: str
    scope: RunScope | None = field(default=None, repr=False)  # None: reads take the current versions
    replay: Replay | None = field(default=None, repr=False)  # a reproduction: fixed reads, model, no registration
    log: logging.Logger = field(init=False)
    snapshots: SnapshotStore = field(init=False, repr=False)
    notes: list[str] = field(default_factory=list, init=False)
    _datasets: dict[str, str] = field(default_factory=dict, init=False, repr=False)
    _written: dict[str, str] = field(default_factory=dict, init=False, repr=False)
    _pins: dict[str, str | None] = field(default_factory=dict, init=False, repr=False)
    _training: dict[str, str] = field(default_factory=dict, init=False, repr=False)
    _proposal: tuple[Candidate, Decision] | None = field(default=None, init=False, repr=False)
    _engine: str | None = field(default=None, init=False, repr=False)
    _reads: Reads = field(default_factory=Reads, init=False, repr=False)  # what step caching checks (cache.py)

    def __post_init__(self) -> None:
        self.log = logging.getLogger(f"{self.config.package}.{self.step}")
        self.snapshots = SnapshotStore(self.storage)

    # -- data ------------------------------------------------------------------
    @property
    def engine(self) -> str:
        """`pandas` or `dask`: the environment's `[data] engine`, with `auto` decided by the raw data's size.

        auto picks Dask when the files under `raw/` take more than a tenth of the
        memory this process may use (the cgroup limit in a pod).
        """
        if self._engine is None:
            setting = self.environment.engine
            raw_bytes = sum(self.storage.sizes(RAW_PREFIX).values()) if setting == engines.AUTO else 0
            self._engine = engines.resolve_engine(setting, raw_bytes)
        return self._engine

    def read(self, name: str, *, context: str = "input", engine: str = "pandas") -> pd.DataFrame | DaskFrame:
        """Read a dataset as this pipeline run knows it, and record its snapshot as an input of this step.

        That is the version the latest successful attempt of an earlier step of
        this pipeline run wrote, even if another run has written a newer one
        since. When no step of this pipeline run wrote it, the current version
        is read and pinned to the pipeline run, so a retried step reads the
        same bytes. `context="training"` marks the data a model is trained on;
        the registered version then names that snapshot in `mlops.training_data`.
        `engine="dask"` returns a Dask DataFrame over the same snapshot (`ctx.engine`
        is the project's choice), read by the environment's Dask workers.
        """
        engine = self._check_engine(engine)
        snapshot_id = self._replayed(name) or self._written.get(name)
        if snapshot_id is None and self.scope is not None:
            snapshot_id = self.scope.written(name)
        if snapshot_id is None and self.scope is not None:
            snapshot_id = self.scope.pinned(name)
        if snapshot_id is None and (engine == engines.DASK or self.storage.list(current_parts_folder(name))):
            snapshot_id = self._current_snapshot(name).id
        if snapshot_id is not None:
            self._read_from_outside(name, snapshot_id)
            return self.read_snapshot(f"{name}:{snapshot_id}", context=context, engine=engine)
        fmt, data = self._read_current(name)
        snapshot = self.snapshots.adopt(name, data, fmt, run_id=self.run_id, step=self.step)
        if self.scope is not None:
            pinned = self.scope.pin(name, snapshot.id, self.run_id)
            if pinned != snapshot.id:  # another step of this pipeline run pinned a version first
                self._read_from_outside(name, pinned)
                return self.read_snapshot(f"{name}:{pinned}", context=context)
        self._read_from_outside(name, snapshot.id)
        df = parse_table(data, self.storage.uri(current_key(name, fmt)))
        self._log_snapshot(snapshot, df, context)
        return df

    def read_snapshot(self, ref: str, *, context: str = "input", engine: str = "pandas") -> pd.DataFrame | DaskFrame:
        """Read one stored version (`ID`, an id prefix, or `NAME:ID`), verified against its id."""
        if self._check_engine(engine) == engines.DASK:
            self.dask_client()
            snapshot, df = self.snapshots.read_dask(ref)
        else:
            snapshot, df = self.snapshots.read(ref)
        self._log_snapshot(snapshot, df, context)
        return df

    def write(self, name: str, df: pd.DataFrame | DaskFrame) -> str:
        """Store a dataset as a snapshot and as its new current version, record it as an output; returns its id.

        A Dask DataFrame is written by the workers as a partitioned snapshot, a
        parquet part per partition, without collecting it here.
        """
        return self._store(name, df, "output")

    def snapshot(self, name: str) -> Snapshot:
        """The snapshot of `name` this step last read or wrote: its id, rows and column statistics, without the data.

        `ctx.snapshot("raw").rows` counts a Dask table's rows without computing it again.
        """
        if name not in self._datasets:
            read = ", ".join(sorted(self._datasets)) or "none yet"
            raise DataError(f"step '{self.step}' has not read or written '{name}' (it has: {read})")
        return self.snapshots.resolve(f"{name}:{self._datasets[name]}")

    def dask_client(self):
        """The Dask client of this environment (its `dask_scheduler`, or a LocalCluster started on first use)."""
        return engines.dask_client(self.environment)

    def _check_engine(self, engine: str) -> str:
        if engine not in (engines.PANDAS, engines.DASK):
            raise DataError(f"engine '{engine}' is unknown; use engine='pandas', engine='dask' or engine=ctx.engine")
        return engine

    def _current_snapshot(self, name: str) -> Snapshot:
        """The current version of `name` as a snapshot, pinned to the pipeline run like any first read."""
        snapshot = self.snapshots.current(name)
        if self.scope is not None:
            pinned = self.scope.pin(name, snapshot.id, self.run_id)
            if pinned != snapshot.id:
                return self.snapshots.resolve(f"{name}:{pinned}")
        return snapshot

    def _store(self, name: str, df: pd.DataFrame | DaskFrame, context: str) -> str:
        import mlflow

        current = self.replay is None  # a reproduction leaves every dataset's current version as it was
        df = self._check_schema(name, df)
        if engines.is_dask(df):
            self.dask_client()
            stored = self.snapshots.write_dask(name, df, run_id=self.run_id, step=self.step, current=current)
        else:
            stored = self.snapshots.write_table(name, df, run_id=self.run_id, step=self.step, current=current)
        self._log_snapshot(stored.snapshot, df, context)
        self._written[name] = stored.snapshot.id
        mlflow.set_tag(TAG_OUTPUT_PREFIX + name, stored.snapshot.id)  # what later steps of this pipeline run read
        return stored.snapshot.id

    def _read_from_outside(self, name: str, snapshot_id: str) -> None:
        """Note a dataset this step read and did not write itself: a cached attempt must find it unchanged."""
        if name not in self._written:
            self._reads.data[name] = snapshot_id

    def _replayed(self, name: str) -> str | None:
        """In a reproduction, the snapshot id of `name` the reproduced step read."""
        return self.replay.reads_of(self.step).get(name) if self.replay is not None else None

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

    def _log_snapshot(self, snapshot: Snapshot, df: pd.DataFrame | DaskFrame, context: str) -> None:
        import mlflow

        self._datasets[snapshot.name] = snapshot.id
        if context == "training":
            self._training[snapshot.name] = snapshot.id
        if engines.is_dask(df):
            _log_input(df._meta, self.snapshots.uri(snapshot), snapshot.name, snapshot.id, context, snapshot.rows)
        else:
            _log_input(df, self.snapshots.uri(snapshot), snapshot.name, snapshot.id, context)
        mlflow.set_tag(TAG_DATA_PREFIX + snapshot.name, snapshot.id)
        if self._training:
            mlflow.set_tag(TAG_TRAINING_DATA, refs(self._training))

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

    def write_predictions(self, df: pd.DataFrame | DaskFrame) -> str:
        """Store predictions as `predictions/<pipeline-run-id>.parquet`; returns its URI.

        A Dask DataFrame is written by the workers as parts of `predictions/<pipeline-run-id>/`
        (a parquet part per partition, a manifest last), without collecting it here; if a
        worker fails, nothing is stored. Either replaces what an earlier attempt stored.
        """
        from mlops_template.data import predictions

        if engines.is_dask(df):
            return self._write_prediction_parts(df)
        key = predictions.predictions_key(self.pipeline_run_id)
        data = write_table(self.storage, key, df)
        self.storage.delete(predictions.predictions_folder(self.pipeline_run_id))  # an earlier attempt's parts
        _log_input(df, self.storage.uri(key), "predictions", content_id(data), "output")
        self.notes.append(f"{len(df)} predictions → {self.storage.uri(key)}")
        return self.storage.uri(key)

    def _write_prediction_parts(self, ddf: DaskFrame) -> str:
        from mlops_template.data import predictions
        from mlops_template.data.hashing import short_id

        self.dask_client()
        with activity(f"writing predictions ({ddf.npartitions:,} partitions)", total=ddf.npartitions) as advance:
            manifest = predictions.write_parts(self.storage, self.pipeline_run_id, ddf, advance)
        uri = self.storage.uri(predictions.predictions_folder(self.pipeline_run_id))
        _log_input(ddf._meta, uri, "predictions", short_id(manifest["digest"]), "output", manifest["rows"])
        self.notes.append(f"{manifest['rows']} predictions → {uri}/ ({len(manifest['parts'])} parts)")
        return uri


def _log_input(df: pd.DataFrame, uri: str, name: str, digest: str, context: str, rows: int | None = None) -> None:
    """Log a dataset on the active run: digest = our content id, source = the stored file (or folder of parts).

    MLflow keeps one dataset per name and digest, with the source it was first
    logged with; an output's own location is tagged on the run as well.
    """
    import mlflow

    from mlops_template.tracking.inputs import log_dataset

    log_dataset(df, source=uri, name=name, digest=digest, context=context, rows=rows)
    if context == "output":
        mlflow.set_tag(TAG_OUTPUT_URI_PREFIX + name, uri)
