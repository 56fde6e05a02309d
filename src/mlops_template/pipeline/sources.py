"""A step's outside inputs: raw files and SQL queries, each kept as a snapshot pinned to the pipeline run,
and every table checked against its dataset's schema (`data.validation`) before it is stored.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlops_template.data import engines, raw
from mlops_template.data.raw import RAW_PREFIX
from mlops_template.data.snapshots import Stored
from mlops_template.data.tables import to_pandas
from mlops_template.errors import DataError, StorageError
from mlops_template.pipeline.cache import Reads
from mlops_template.pipeline.state import StepState
from mlops_template.progress import activity
from mlops_template.tracking.tags import TAG_SQL_PREFIX

if TYPE_CHECKING:
    import pandas as pd
    from dask.dataframe import DataFrame as DaskFrame


class Sources(StepState):
    """The input half of a step's context: `StepContext` holds the state, and reads snapshots."""

    _pins: dict[str, str | None]
    _reads: Reads

    def has_raw(self) -> bool:
        """Whether the storage holds raw input files under `raw/` (or this pipeline run already read some)."""
        if self.replay is not None:
            return self._replayed(RAW_PREFIX) is not None
        if self._pinned_raw() is not None:
            return True
        if raw.raw_keys(self.storage):
            return True
        self._reads.raw.setdefault("*", raw.NO_FILES)  # files added later change what the step does
        return False

    def read_raw(self, pattern: str = "*", *, engine: str = "pandas") -> pd.DataFrame | DaskFrame:
        """The CSV, parquet and JSON-lines files under the storage's `raw/` (those `pattern` matches), in name order.

        `pattern` is a glob relative to `raw/` (`"events/2024-*.csv"`); every
        file must have the same columns. `engine="dask"` reads them in blocks on
        the Dask workers (a large CSV file in 64 MB pieces) instead of into this
        process. What was read is kept as a snapshot named `raw`, so a later run
        can be reproduced even after the raw files change, and pinned to the
        pipeline run: a retried step reads that snapshot, whatever `raw/` holds by then.
        """
        engine = self._check_engine(engine)
        pinned = self._pinned_raw()
        if pinned is not None:
            self._reads.data[RAW_PREFIX] = pinned
            return self.read_snapshot(f"{RAW_PREFIX}:{pinned}", engine=engine)
        keys = raw.raw_keys(self.storage, pattern)
        if keys:
            self._reads.raw[pattern] = raw.files_digest(self.storage, keys)
        if not keys:
            where = f"{self.storage.uri(RAW_PREFIX)}/{'' if pattern == '*' else pattern}"
            raise StorageError(
                f"no .csv, .parquet or .jsonl files match {where}; add some, fix the pattern, or drop read_raw()"
            )
        df = None
        if engine == engines.DASK:
            self.dask_client()
            ddf = self._check_schema(RAW_PREFIX, raw.read_dask(self.storage, keys))
            stored = self.snapshots.write_dask(RAW_PREFIX, ddf, run_id=self.run_id, step=self.step, current=False)
        else:
            df = self._check_schema(RAW_PREFIX, raw.read_pandas(self.storage, keys))
            stored = self.snapshots.write_table(RAW_PREFIX, df, run_id=self.run_id, step=self.step, current=False)
        snapshot_id = stored.snapshot.id
        if self.scope is not None:
            snapshot_id = self.scope.pin(RAW_PREFIX, snapshot_id, self.run_id)  # another attempt may have been first
        if df is None or snapshot_id != stored.snapshot.id:  # Dask reads the stored parts, not the files again
            return self.read_snapshot(f"{RAW_PREFIX}:{snapshot_id}", engine=engine)
        self._log_snapshot(stored.snapshot, df, "input")
        return df

    def read_sql(
        self,
        query: str | Path,
        *,
        connection: str,
        params: dict[str, Any] | None = None,
        name: str | None = None,
        allow_empty: bool = False,
        engine: str = "pandas",
        cache_key: str | None = None,
    ) -> pd.DataFrame | DaskFrame:
        """The result of the query file `query` (relative to the project) on the environment's `connection`.

        `params` bind as `:name` in the query. The result is kept as a snapshot
        named `name` (default: the file's stem) and pinned to the pipeline run,
        so a retried step reads it rather than the live tables; the step run
        records the query's file, sha256, connection name and parameters
        (`mlops show`). No rows is an error unless `allow_empty=True`.

        A database changes under the same query, so a step that reads one is
        run again every time, unless `cache_key` says which state of the source
        it means (a param such as `ctx.params["as_of"]`): then the step is
        reused while its code, params, this key and the query file are unchanged.
        """
        import json

        import mlflow

        from mlops_template.data import sql

        engine = self._check_engine(engine)
        found = sql.read_query(self.config.root, query, connection, params or {})
        name = name or found.path.stem
        if cache_key is None:
            self._reads.live = True
        else:
            self._reads.sql[f"{found.relative}#{cache_key}"] = found.sha256
        snapshot_id = self._replayed(name) or (self.scope.pinned(name) if self.scope is not None else None)
        if snapshot_id is None:
            url = sql.connection_url(self.config, self.environment, connection)
            with activity(f"querying '{connection}' ({found.relative})"):
                with sql.result_file(url, found, environment=self.environment.name) as (path, rows):
                    if rows == 0 and not allow_empty:
                        raise DataError(
                            f"query {found.relative} on connection '{connection}' returned no rows "
                            f"(params {found.record()['params']}); check the parameters and the tables, or pass "
                            "allow_empty=True to read_sql"
                        )
                    stored, df = self._store_result(name, path, engine)
            snapshot_id = stored.snapshot.id
            if self.scope is not None:
                snapshot_id = self.scope.pin(name, snapshot_id, self.run_id)  # another attempt may have been first
            if df is not None and snapshot_id == stored.snapshot.id:  # the table in hand: not read back
                mlflow.set_tag(TAG_SQL_PREFIX + name, json.dumps(found.record(), sort_keys=True))
                self._log_snapshot(stored.snapshot, df, "input")
                return df
        mlflow.set_tag(TAG_SQL_PREFIX + name, json.dumps(found.record(), sort_keys=True))
        return self.read_snapshot(f"{name}:{snapshot_id}", engine=engine)

    def _store_result(self, name: str, path: Path, engine: str) -> tuple[Stored, pd.DataFrame | None]:
        """A query's result file kept as a snapshot (not made current), checked against its schema first.

        With pandas, the table as the step gets it comes back too. For Dask the
        file is put in the storage's staging area and the workers read it from
        there in row groups, so the step's process never holds it.
        """
        import pyarrow.parquet as pq

        from mlops_template.data import partitioned

        if engine != engines.DASK:
            table = pq.read_table(path)
            df = self._check_schema(name, to_pandas(table))
            return self.snapshots.write_table(name, table, run_id=self.run_id, step=self.step, current=False), df
        self.dask_client()
        staging = partitioned.staging_folder(name)
        self.storage.upload_dir(path.parent, staging)  # the folder holds the result file alone
        try:
            ddf = self._check_schema(name, partitioned.read_file(self.storage, f"{staging}/{path.name}", "parquet"))
            return self.snapshots.write_dask(name, ddf, run_id=self.run_id, step=self.step, current=False), None
        finally:
            self.storage.delete(staging)

    def _check_schema(self, name: str, df: pd.DataFrame | DaskFrame) -> pd.DataFrame | DaskFrame:
        """`df` checked against the project's schema for `name` (`<package>.schemas`), as `[data] validation` says.

        Failed under `error`: the step stops with the summary and nothing is
        stored; under `warn`: a warning, and it is stored. The failing rows go
        into the step run's artifact `schema/<name>.failures.csv`. A Dask frame
        is checked partition by partition by the workers as they write it.
        """
        from mlops_template.data import validation

        mode = self.environment.validation
        schema = validation.load_schemas(self.config.package).get(name) if mode != "off" else None
        if schema is None:
            return df
        if engines.is_dask(df):
            return df.map_partitions(validation.validated_part, schema, name, mode == "warn", meta=df._meta)
        failure = validation.check(df, schema, name)
        if failure is None:
            return df
        import mlflow

        artifact = f"schema/{name}.failures.csv"
        mlflow.log_text(failure.report.to_csv(index=False), artifact)
        if mode == "warn":
            self.log.warning("%s (failing rows: %s)", failure.summary, artifact)
            self.notes.append(f"schema of '{name}' failed, stored anyway ([data] validation = \"warn\")")
            return df
        raise DataError(
            f"{failure.summary}; nothing was stored under '{name}' (failing rows: artifact {artifact} of this step "
            f"run); fix the data, or the schema in {self.config.package}.schemas"
        )

    def _pinned_raw(self) -> str | None:
        if self.replay is not None:
            return self._replayed(RAW_PREFIX)
        if self.scope is None:
            return None
        if "raw" not in self._pins:
            self._pins["raw"] = self.scope.pinned(RAW_PREFIX)
        return self._pins["raw"]
