"""What a snapshot holds, summarised: rows, schema, and per-column statistics.

Profiles are built from Arrow record batches one at a time, so a file of any
size is summarised in constant memory, and the same code serves a DataFrame a
step writes, a parquet file and a CSV file.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pyarrow as pa

MAX_CATEGORIES = 50  # a column with more distinct values has no "top values"
TOP_VALUES = 10
_CSV_BLOCK = 16 << 20
_PARQUET_BATCH = 1 << 20


def profile_table(table: pa.Table) -> dict[str, Any]:
    return _profile(table.schema, table.to_batches())


def profile_file(path: str, fmt: str) -> dict[str, Any]:
    """Profile a local parquet or CSV file, streaming it."""
    if fmt == "csv":
        return _profile_csv(path)
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pq.read_schema(path)
    # Strings read as dictionaries skip building a Python-sized string array: ~4x faster, and counting is cheaper.
    strings = [f.name for f in schema if pa.types.is_string(f.type) or pa.types.is_large_string(f.type)]
    with pq.ParquetFile(path, read_dictionary=strings) as f:
        return _profile(f.schema_arrow, f.iter_batches(batch_size=_PARQUET_BATCH))


def _profile_csv(path: str, column_types: dict | None = None) -> dict[str, Any]:
    """CSV types are inferred from the first block; a later value that does not fit widens that column and restarts."""
    import pyarrow as pa
    import pyarrow.csv as csv

    column_types = dict(column_types or {})
    reader = csv.open_csv(
        path,
        read_options=csv.ReadOptions(block_size=_CSV_BLOCK),
        convert_options=csv.ConvertOptions(
            column_types=column_types, auto_dict_encode=True, auto_dict_max_cardinality=MAX_CATEGORIES
        ),
    )
    try:
        return _profile(reader.schema, reader)
    except pa.ArrowInvalid as exc:
        column = _failed_column(str(exc), reader.schema)
        if column is None or column_types.get(column) == pa.string():
            raise
        current = column_types.get(column, reader.schema.field(column).type)
        column_types[column] = pa.float64() if pa.types.is_integer(current) else pa.string()
        return _profile_csv(path, column_types)


def _failed_column(message: str, schema: pa.Schema) -> str | None:
    import re

    found = re.search(r"CSV column #(\d+)", message)
    return schema.names[int(found.group(1))] if found else None


def _profile(schema: pa.Schema, batches: Iterable[pa.RecordBatch]) -> dict[str, Any]:
    columns = [_Column(field.name, field.type) for field in schema]
    rows = 0
    for batch in _prefetched(batches):
        rows += batch.num_rows
        for column, array in zip(columns, batch.columns, strict=True):
            column.add(array)
    return {"rows": rows, "columns": [c.summary(rows) for c in columns]}


def _prefetched(batches: Iterable[pa.RecordBatch], depth: int = 2):
    """Decode the next batches in a thread while this one is summarised (Arrow releases the GIL for both)."""
    import queue
    import threading

    done = object()
    ready: queue.Queue = queue.Queue(depth)
    stop = threading.Event()

    def produce() -> None:
        try:
            for batch in batches:
                if stop.is_set():
                    return
                ready.put(batch)
            ready.put(done)
        except BaseException as exc:  # handed to the consumer, raised there
            ready.put(exc)

    thread = threading.Thread(target=produce, daemon=True)
    thread.start()
    try:
        while (item := ready.get()) is not done:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        while thread.is_alive():  # unblock a producer waiting on a full queue
            try:
                ready.get(timeout=0.05)
            except queue.Empty:
                pass
        thread.join()


def type_name(arrow_type: pa.DataType) -> str:
    """A stable, readable type name: dictionary columns by their value type, large_string as string."""
    import pyarrow as pa

    if pa.types.is_dictionary(arrow_type):
        arrow_type = arrow_type.value_type
    if pa.types.is_large_string(arrow_type):
        return "string"
    return str(arrow_type)


class _Column:
    """Running statistics of one column: Chan's parallel update for mean and variance, capped value counts."""

    def __init__(self, name: str, arrow_type: pa.DataType) -> None:
        import pyarrow as pa

        self.name = name
        self.type = type_name(arrow_type)
        value_type = arrow_type.value_type if pa.types.is_dictionary(arrow_type) else arrow_type
        self.numeric = (
            pa.types.is_integer(value_type) or pa.types.is_floating(value_type)
        ) and not pa.types.is_boolean(value_type)
        self.integer = pa.types.is_integer(value_type)
        self.countable = self.integer or pa.types.is_string(value_type) or pa.types.is_large_string(value_type)
        self.countable |= pa.types.is_boolean(value_type) or pa.types.is_dictionary(arrow_type)
        self.nulls = 0
        self.count = 0
        self.mean = 0.0
        self.m2 = 0.0
        self.min: Any = None
        self.max: Any = None
        self.counts: dict[Any, int] | None = {} if self.countable else None

    def add(self, array: pa.Array) -> None:
        import pyarrow.compute as pc

        self.nulls += array.null_count
        n = len(array) - array.null_count
        if n == 0:
            return
        if self.numeric:
            if array.type.num_fields == 0 and hasattr(array, "dictionary"):
                array = array.dictionary_decode()
            low_high = pc.min_max(array)
            low, high = low_high["min"].as_py(), low_high["max"].as_py()
            self.min = low if self.min is None else min(self.min, low)
            self.max = high if self.max is None else max(self.max, high)
            mean = pc.mean(array).as_py()
            m2 = pc.variance(array, ddof=0).as_py() * n
            total = self.count + n
            delta = mean - self.mean
            self.mean += delta * n / total
            self.m2 += m2 + delta * delta * self.count * n / total
            self.count = total
            if self.integer and self.counts is not None and self.max - self.min >= MAX_CATEGORIES:
                self.counts = None  # a wide integer range: an id or a measurement, not a category
        else:
            self.count += n
        if self.counts is not None:
            self._count(array)
            if self.counts is not None and len(self.counts) > MAX_CATEGORIES:
                self.counts = None

    def _count(self, array: pa.Array) -> None:
        """Add value counts: by bincount over dictionary indices or a narrow integer range, else by hashing."""
        import numpy as np
        import pyarrow as pa
        import pyarrow.compute as pc

        if pa.types.is_dictionary(array.type) or (self.integer and self.min is not None):
            if pa.types.is_dictionary(array.type):
                codes, values, offset = array.indices, array.dictionary.to_pylist(), 0
            else:
                offset = int(pc.min(array).as_py())
                codes, values = pc.subtract(array, offset), None
            codes = codes.drop_null().to_numpy()
            tally = np.bincount(codes)
            for code in np.flatnonzero(tally):
                value = values[code] if values is not None else int(code) + offset
                self.counts[value] = self.counts.get(value, 0) + int(tally[code])
            return
        counts = pc.value_counts(array)
        for value, count in zip(counts.field("values").to_pylist(), counts.field("counts").to_pylist(), strict=True):
            if value is not None:
                self.counts[value] = self.counts.get(value, 0) + count

    def summary(self, rows: int) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "dtype": self.type, "nulls": self.nulls}
        if self.numeric and self.count:
            out |= {
                "min": self.min,
                "max": self.max,
                "mean": self.mean,
                "std": math.sqrt(self.m2 / (self.count - 1)) if self.count > 1 else 0.0,
            }
        if self.counts is not None and self.count:
            top = sorted(self.counts.items(), key=lambda kv: (-kv[1], str(kv[0])))[:TOP_VALUES]
            out["distinct"] = len(self.counts)
            out["top"] = [[_jsonable(v), c] for v, c in top]
        return out


def _jsonable(value: Any) -> Any:
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)
