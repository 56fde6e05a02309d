"""Reading tables: one reader for CSV and parquet, shared by steps, snapshots and manifests.

A CSV file carries no types, and readers guess them differently (pandas and
Arrow disagree on dates, on booleans with blanks, on blank text). Every table
the library reads goes through Arrow's CSV reader with the options below, so
the DataFrame a step gets has the types its snapshot's manifest records:

==================  =============================================
manifest dtype      a step's pandas dtype
==================  =============================================
int64               int64, or float64 when the column has blanks
double              float64
bool                bool, or object when the column has blanks
string              str
date32[day]         datetime64[ms]
timestamp[s]        datetime64[s] (with its time zone, if any)
==================  =============================================

Arrow gives a CSV column the first type in :data:`INFERENCE_ORDER` that
accepts every value in it. Readers that stream a file infer from its first
block instead and, when a later value does not fit, move the column along the
same order with :func:`looser`, so they end on the same type.
"""

from __future__ import annotations

import io
from typing import TYPE_CHECKING

from mlops_template.errors import StorageError

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa
    import pyarrow.csv

    from mlops_template.storage import Storage

#: Arrow's CSV type inference, tightest first (`arrow/csv/inference_internal.h`).
INFERENCE_ORDER = ("null", "int64", "bool", "date32[day]", "time32[s]", "timestamp[s]", "timestamp[ns]", "double")
INFERENCE_ORDER += ("string", "binary")
_MAX_BLOCK = (1 << 31) - 1  # Arrow's block size is an int32


def csv_parse_options(*, newlines_in_values: bool = True) -> pyarrow.csv.ParseOptions:
    """How CSV text is split into values: quoted values may hold line breaks unless a caller cuts at them."""
    import pyarrow.csv as csv

    return csv.ParseOptions(newlines_in_values=newlines_in_values)


def csv_convert_options(column_types: dict[str, pa.DataType] | None = None) -> pyarrow.csv.ConvertOptions:
    """How CSV values become typed columns: blank or `NA`-like text is missing, as pandas reads it."""
    import pyarrow.csv as csv

    return csv.ConvertOptions(column_types=column_types or {}, strings_can_be_null=True)


def looser(arrow_type: pa.DataType) -> pa.DataType | None:
    """The next type Arrow's CSV inference tries after `arrow_type` (None after binary).

    A timestamp keeps its time zone: Arrow infers a zone-aware column from
    values that carry an offset, and only such values fit it.
    """
    import pyarrow as pa

    if pa.types.is_timestamp(arrow_type):
        return pa.timestamp("ns", arrow_type.tz) if arrow_type.unit == "s" else pa.float64()
    name = str(arrow_type)
    if name not in INFERENCE_ORDER or name == INFERENCE_ORDER[-1]:
        return None
    following = INFERENCE_ORDER[INFERENCE_ORDER.index(name) + 1]
    return {
        "int64": pa.int64(),
        "bool": pa.bool_(),
        "date32[day]": pa.date32(),
        "time32[s]": pa.time32("s"),
        "timestamp[s]": pa.timestamp("s"),
        "timestamp[ns]": pa.timestamp("ns"),
        "double": pa.float64(),
        "string": pa.string(),
        "binary": pa.binary(),
    }[following]


def read_arrow(data: bytes, fmt: str) -> pa.Table:
    """An Arrow table from a whole file's bytes, `fmt` being `csv` or `parquet`."""
    if fmt == "csv":
        import pyarrow as pa
        import pyarrow.csv as csv

        def read(**options) -> pa.Table:
            return csv.read_csv(
                io.BytesIO(data),
                read_options=csv.ReadOptions(**options),
                parse_options=csv_parse_options(),
                convert_options=csv_convert_options(),
            )

        try:
            return read()
        except pa.ArrowInvalid as exc:
            if "straddl" not in str(exc):
                raise
            return read(block_size=min(len(data) + 1, _MAX_BLOCK))  # a row longer than a block: one block
    import pyarrow.parquet as pq

    return pq.read_table(io.BytesIO(data))


def to_pandas(table: pa.Table) -> pd.DataFrame:
    """The DataFrame of an Arrow table, dates as datetime64 (pandas has no date dtype; objects would hide it)."""
    return table.to_pandas(date_as_object=False)


def parse_table(data: bytes, uri: str) -> pd.DataFrame:
    """A DataFrame from a stored file's bytes: CSV when `uri` ends in .csv, else parquet."""
    try:
        return to_pandas(read_arrow(data, "csv" if uri.endswith(".csv") else "parquet"))
    except Exception as exc:
        raise StorageError(f"{uri}: cannot be read as a table ({exc}); is the file complete?") from exc


def read_table(storage: Storage, key: str) -> pd.DataFrame:
    """Read a stored parquet or CSV file (by suffix) into a DataFrame, with the one table reader above."""
    from mlops_template.progress import activity

    with activity(f"reading {key}"):
        return parse_table(storage.read_bytes(key), storage.uri(key))


def write_table(storage: Storage, key: str, df: pd.DataFrame) -> bytes:
    """Write a DataFrame as parquet, atomically; returns the bytes written (for hashing)."""
    buffer = io.BytesIO()
    df.to_parquet(buffer, index=False)
    data = buffer.getvalue()
    storage.write_bytes(key, data)
    return data
