"""SQL sources: a query file run on a connection an environment names, its result streamed into parquet.

A connection is a SQLAlchemy URL under `[environments.<name>.connections]`
(`duckdb:///warehouse.duckdb`, `postgresql+psycopg2://ml:${WAREHOUSE_PASSWORD}@db/sales`);
`${VAR}` is read from the process environment when the connection is used, so
no password sits in `mlops.toml`, and every message shows the URL redacted. A
database file named by a relative URL lives in the project folder, and must
exist (an empty new database would answer every query wrongly).

A query binds its parameters as `:name` in every dialect; one it names that is
not given, or one given that it does not name, is refused before the database
is asked. The result comes in chunks of `CHUNK_ROWS` rows, so no fetch holds it
whole. DuckDB gives its types up front, and its batches go straight into one
parquet file; a DB-API driver's chunks are written as parquet parts and joined
with their types unified (a column empty in the first chunk takes the type of a
later one).
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlops_template.errors import ConfigError, DataError, choices
from mlops_template.redact import redact, redact_text

if TYPE_CHECKING:
    from mlops_template.config.load import Config, Environment

CHUNK_ROWS = 50_000
_VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_FILE_DIALECTS = ("duckdb", "sqlite")


@dataclass(frozen=True)
class Query:
    """A query file, read: its path in the project, its text and sha256, and the parameters bound to it."""

    path: Path
    relative: str  # as the run records it: relative to the project
    text: str
    sha256: str
    connection: str
    params: dict[str, Any] = field(default_factory=dict)

    def record(self) -> dict[str, Any]:
        """What a run records of it: the file, its sha256, the connection's name (never its URL), the parameters."""
        return {
            "file": self.relative,
            "sha256": self.sha256,
            "connection": self.connection,
            "params": {k: redact_text(str(v)) for k, v in sorted(self.params.items())},
        }


def read_query(root: Path, query: str | os.PathLike[str], connection: str, params: Mapping[str, Any]) -> Query:
    """The query file `query` (relative to the project folder `root`), checked against the parameters given."""
    from sqlalchemy import text

    path = Path(query)
    path = path if path.is_absolute() else root / path
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DataError(
            f"query file {path} cannot be read ({exc.strerror or exc}); put the query there, or fix the path "
            "(relative to the project folder)"
        ) from exc
    sql = data.decode("utf-8")
    named = set(text(sql).compile().params)
    missing, extra = sorted(named - set(params)), sorted(set(params) - named)
    if missing or extra:
        parts = [f"it names {', '.join(':' + m for m in missing)}, not given" if missing else ""]
        parts.append(f"{', '.join(extra)} given but not named in it (as :name)" if extra else "")
        raise DataError(f"query {_shown(root, path)}: {'; '.join(p for p in parts if p)}; pass params={{...}} to match")
    return Query(path, _shown(root, path), sql, hashlib.sha256(data).hexdigest(), connection, dict(params))


def connection_url(config: Config, env: Environment, name: str) -> str:
    """The URL of connection `name` in `env`, its `${VAR}`s filled in and a relative database file made absolute."""
    known = dict(env.connections)
    if name not in known:
        elsewhere = sorted(e for e, other in config.environments.items() if name in dict(other.connections))
        where = (
            f"; it is defined for {', '.join(elsewhere)} only: add it under [environments.{env.name}.connections]"
            if elsewhere
            else f"; {choices(known, name)}"
            if known
            else f"; add it under [environments.{env.name}.connections]"
        )
        raise ConfigError(f"environment '{env.name}' has no connection '{name}'{where}")
    url = _VARIABLE.sub(lambda m: _variable(m.group(1), env.name, name), known[name])
    dialect = url.split(":", 1)[0].split("+", 1)[0]
    if dialect in _FILE_DIALECTS:
        url = _database_file(url, config.root, env.name, name)
    return url


def _variable(variable: str, environment: str, connection: str) -> str:
    value = os.environ.get(variable)
    if value is None:
        raise ConfigError(
            f"environment '{environment}': connection '{connection}' reads ${{{variable}}}, which is not set; "
            f"export {variable} where the pipeline runs (a Kubernetes Secret in [dag] secrets for pods)"
        )
    return value


def _database_file(url: str, root: Path, environment: str, connection: str) -> str:
    """A file database's URL with its path absolute (relative ones are the project's); it must exist."""
    head, _, rest = url.partition(":///")
    if not rest or rest.startswith(":memory:"):
        return url
    path_part, sep, query = rest.partition("?")
    path = Path(path_part) if path_part.startswith("/") else root / path_part
    if not path.is_file():
        raise DataError(
            f"environment '{environment}': connection '{connection}' names the database file {path}, which does "
            "not exist; create it, or fix the path (relative to the project folder)"
        )
    return f"{head}:///{path}{sep}{query}"


@contextmanager
def result_file(url: str, query: Query, *, environment: str) -> Iterator[tuple[Path, int]]:
    """Run `query` on `url`; a parquet file of its result and its row count, removed when the block ends."""
    with tempfile.TemporaryDirectory(prefix="mlops-sql-") as tmp:
        (Path(tmp) / "result").mkdir()  # a folder of the result alone, which can be uploaded whole
        target = Path(tmp) / "result" / "result.parquet"
        rows = _fetch(url, query, target, environment=environment)
        yield target, rows


def _fetch(url: str, query: Query, target: Path, *, environment: str) -> int:
    """Write the result to `target` (parquet), chunk by chunk; its row count."""
    from sqlalchemy import create_engine, exc

    where = f"environment '{environment}': connection '{query.connection}' ({redact(url)})"
    try:
        engine = create_engine(url)
    except (exc.ArgumentError, exc.NoSuchModuleError, ImportError) as error:
        raise ConfigError(
            f"{where}: not a URL SQLAlchemy can use ({_first_line(error)}); fix it in mlops.toml"
        ) from error
    try:
        with engine.connect() as connection:
            if engine.dialect.name == "duckdb":
                return _duckdb_result(connection, query, target, where)
            return _join(_dbapi_parts(connection, query, target.parent.parent), target)
    except exc.ProgrammingError as error:
        raise DataError(f"query {query.relative} failed on {where}: {_first_line(error)}; fix the query") from error
    except exc.DBAPIError as error:
        raise DataError(
            f"{where} failed: {_first_line(error)}; check that the database is reachable and the credentials are right"
        ) from error
    finally:
        engine.dispose()


def _dbapi_parts(connection: Any, query: Query, folder: Path) -> list[Path]:
    """The result in parquet parts of at most CHUNK_ROWS rows each (one, empty, for no rows), from a server cursor."""
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq
    from sqlalchemy import text

    result = connection.execution_options(stream_results=True, max_row_buffer=CHUNK_ROWS).execute(
        text(query.text), query.params
    )
    columns = list(result.keys())
    parts: list[Path] = []
    for rows in result.partitions(CHUNK_ROWS):
        part = folder / f"part-{len(parts):05d}.parquet"
        frame = pd.DataFrame.from_records(rows, columns=columns)
        pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), part)
        parts.append(part)
    if not parts:
        part = folder / "part-00000.parquet"
        pq.write_table(pa.Table.from_pandas(pd.DataFrame(columns=columns), preserve_index=False), part)
        parts.append(part)
    return parts


def _join(parts: list[Path], target: Path) -> int:
    """The parts as one parquet file with their types unified, one batch held at a time; its row count."""
    import pyarrow as pa
    import pyarrow.dataset as ds
    import pyarrow.parquet as pq

    schema = pa.unify_schemas([pq.read_schema(p) for p in parts], promote_options="permissive")
    rows = 0
    with pq.ParquetWriter(target, schema) as writer:
        joined = ds.dataset([str(p) for p in parts], schema=schema, format="parquet")
        for batch in joined.to_batches(batch_readahead=0, fragment_readahead=0):
            writer.write_batch(batch)
            rows += batch.num_rows
    for part in parts:
        part.unlink()
    return rows


def _duckdb_result(connection: Any, query: Query, target: Path, where: str) -> int:
    """DuckDB's result as Arrow batches from its streaming execution (its cursor would materialise it whole first),
    each written to `target` as it comes; its row count."""
    import duckdb
    import pyarrow as pa
    import pyarrow.parquet as pq
    from sqlalchemy import text

    compiled = text(query.text).compile(dialect=connection.dialect)  # :name becomes DuckDB's $1, $2, ...
    bound = compiled.construct_params(query.params)
    arguments = [bound[name] for name in compiled.positiontup or []]
    database = connection.connection.driver_connection  # duckdb_engine's wrapper: DuckDB's own connection calls
    rows = 0
    try:
        reader = database.sql(compiled.string, params=arguments or None).to_arrow_reader(CHUNK_ROWS)
        schema = _widened(reader.schema)
        with pq.ParquetWriter(target, schema) as writer:
            for batch in reader:
                writer.write_table(pa.Table.from_batches([batch]).cast(schema))
                rows += batch.num_rows
    except (duckdb.ParserException, duckdb.BinderException, duckdb.CatalogException) as error:
        raise DataError(f"query {query.relative} failed on {where}: {_first_line(error)}; fix the query") from error
    except duckdb.Error as error:
        raise DataError(f"{where} failed: {_first_line(error)}; check the database file") from error
    return rows


def _widened(schema: Any) -> Any:
    """Integers as int64 and floats as float64, as every other driver's rows give them through pandas."""
    import pyarrow as pa

    def wide(kind: Any) -> Any:
        if pa.types.is_integer(kind):
            return pa.int64()
        return pa.float64() if pa.types.is_floating(kind) else kind

    return pa.schema([field.with_type(wide(field.type)) for field in schema])


def _first_line(error: BaseException) -> str:
    original = getattr(error, "orig", None) or error
    lines = str(original).strip().splitlines()
    return redact_text(lines[0] if lines else type(original).__name__)


def _shown(root: Path, path: Path) -> str:
    try:
        return path.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return str(path)
