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
_CSV_BLOCK = 4 << 20
_CSV_PARALLEL_MIN = 32 << 20
_PARQUET_BATCH = 1 << 18  # rows; small batches reuse the same memory instead of faulting in more


def profile_table(table: pa.Table) -> dict[str, Any]:
    return _profile(table.schema, table.to_batches(), prefetch=False).summary()


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
        return _profile(f.schema_arrow, f.iter_batches(batch_size=_PARQUET_BATCH)).summary()


def _profile_csv(path: str, column_types: dict | None = None, *, newlines_in_values: bool = False) -> dict[str, Any]:
    """Profile a CSV file, in parallel parts cut at line breaks when it is large.

    Like Arrow's own parallel reader, cutting at line breaks assumes quoted
    values hold none; a file where one does fails to parse that way and is read
    again as one stream that allows them. Types are inferred from the first
    block; a later value that does not fit widens that column (integer → float
    → string) and the profile restarts.
    """
    import pyarrow as pa
    import pyarrow.csv as csv

    column_types = dict(column_types or {})
    source = pa.memory_map(path)
    bounds = [(0, source.size())] if newlines_in_values else _csv_parts(path, source.size())
    parse = csv.ParseOptions(newlines_in_values=newlines_in_values)

    def reader(start: int, end: int, schema: pa.Schema | None = None) -> csv.CSVStreamingReader:
        read = csv.ReadOptions(
            block_size=_CSV_BLOCK, column_names=schema.names if schema else None, use_threads=len(bounds) == 1
        )
        types = {f.name: f.type for f in schema} if schema else column_types
        convert = csv.ConvertOptions(column_types=types)
        body = pa.BufferReader(source.read_at(end - start, start))
        return csv.open_csv(body, read_options=read, parse_options=parse, convert_options=convert)

    first: csv.CSVStreamingReader | None = None
    try:
        first = reader(*bounds[0])
        readers = [first] + [reader(start, end, first.schema) for start, end in bounds[1:]]
        if len(readers) == 1:
            return _profile(first.schema, first).summary()
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(len(readers)) as pool:
            profiles = list(pool.map(lambda r: _profile(first.schema, r, prefetch=False), readers))
        for other in profiles[1:]:
            profiles[0].merge(other)
        return profiles[0].summary()
    except pa.ArrowInvalid as exc:
        column = _failed_column(str(exc), first.schema) if first is not None else None
        if column is None:
            if newlines_in_values:
                raise
            return _profile_csv(path, column_types, newlines_in_values=True)
        if column_types.get(column) == pa.string():
            raise
        current = column_types.get(column, first.schema.field(column).type)
        column_types[column] = pa.float64() if pa.types.is_integer(current) else pa.string()
        return _profile_csv(path, column_types, newlines_in_values=newlines_in_values)
    finally:
        source.close()


def _csv_parts(path: str, size: int) -> list[tuple[int, int]]:
    """Byte ranges that end at line breaks, two per core for a large file."""
    import mmap
    import os

    parts = min(2 * (os.cpu_count() or 1), 8)  # two per core: one parses while the other's batch is summarised
    if size < _CSV_PARALLEL_MIN:
        return [(0, size)]
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
        cuts = [0]
        for i in range(1, parts):
            cut = mm.find(b"\n", max(size * i // parts, cuts[-1])) + 1
            if 0 < cut < size:
                cuts.append(cut)
    cuts.append(size)
    return list(zip(cuts[:-1], cuts[1:], strict=True))


def _failed_column(message: str, schema: pa.Schema) -> str | None:
    import re

    found = re.search(r"CSV column #(\d+)", message)
    return schema.names[int(found.group(1))] if found else None


def _profile(schema: pa.Schema, batches: Iterable[pa.RecordBatch], *, prefetch: bool = True) -> _Profile:
    profile = _Profile(schema)
    for batch in _prefetched(batches) if prefetch else batches:
        profile.add(batch)
    return profile


class _Profile:
    """Running statistics of a table's columns; profiles of parts of one table merge into the whole's."""

    def __init__(self, schema: pa.Schema) -> None:
        self.rows = 0
        self.columns = [_Column(field.name, field.type) for field in schema]

    def add(self, batch: pa.RecordBatch) -> None:
        self.rows += batch.num_rows
        for column, array in zip(self.columns, batch.columns, strict=True):
            column.add(array)

    def merge(self, other: _Profile) -> None:
        self.rows += other.rows
        for mine, theirs in zip(self.columns, other.columns, strict=True):
            mine.merge(theirs)

    def summary(self) -> dict[str, Any]:
        return {"rows": self.rows, "columns": [c.summary() for c in self.columns]}


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
        except BaseException as exc:  # noqa: BLE001  (handed to the consumer, raised there)
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


def _min_max(array: pa.Array) -> tuple[Any, Any]:
    """Extremes of a numeric array; NumPy's are several times faster for floats without nulls or NaN."""
    import math

    import pyarrow as pa
    import pyarrow.compute as pc

    values = _view(array) if pa.types.is_floating(array.type) else None
    if values is not None:
        low, high = float(values.min()), float(values.max())
        if not (math.isnan(low) or math.isnan(high)):
            return low, high
    both = pc.min_max(array)
    return both["min"].as_py(), both["max"].as_py()


_NUMPY_TYPES = {"int8": "<i1", "int16": "<i2", "int32": "<i4", "int64": "<i8", "float": "<f4", "double": "<f8"}
_NUMPY_TYPES |= {f"u{k}": f"<u{v[-1]}" for k, v in _NUMPY_TYPES.items() if k.startswith("int")}


def _view(array: pa.Array):
    """A NumPy view of a null-free numeric Arrow array, or None (Array.to_numpy would import pandas, ~0.2 s)."""
    import numpy as np

    layout = _NUMPY_TYPES.get(str(array.type))
    if layout is None or array.null_count:
        return None
    return np.frombuffer(array.buffers()[1], layout, len(array), array.offset * int(layout[-1]))


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
            low, high = _min_max(array)
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

    def merge(self, other: _Column) -> None:
        """Fold in the statistics of the same column over other rows (Chan et al.'s pairwise update)."""
        self.nulls += other.nulls
        if other.count and self.numeric:
            total = self.count + other.count
            delta = other.mean - self.mean
            self.mean += delta * other.count / total
            self.m2 += other.m2 + delta * delta * self.count * other.count / total
            self.min = other.min if self.min is None else min(self.min, other.min)
            self.max = other.max if self.max is None else max(self.max, other.max)
            self.count = total
        elif other.count:
            self.count += other.count
        if self.counts is None or other.counts is None:
            self.counts = None
        else:
            for value, count in other.counts.items():
                self.counts[value] = self.counts.get(value, 0) + count
            wide = self.integer and self.min is not None and self.max - self.min >= MAX_CATEGORIES
            if wide or len(self.counts) > MAX_CATEGORIES:
                self.counts = None

    def _count(self, array: pa.Array) -> None:
        """Add value counts: by bincount over dictionary indices or a narrow integer range, else by hashing."""
        import numpy as np
        import pyarrow as pa
        import pyarrow.compute as pc

        if pa.types.is_dictionary(array.type) or (self.integer and self.min is not None):
            dictionary = pa.types.is_dictionary(array.type)
            codes = _view(pc.cast((array.indices if dictionary else array).drop_null(), pa.int64()))
            offset = 0 if dictionary or not len(codes) else int(codes.min())
            tally = np.bincount(codes - offset if offset else codes)
            values = array.dictionary.to_pylist() if dictionary else None
            for code in np.flatnonzero(tally):
                value = values[code] if values is not None else int(code) + offset
                self.counts[value] = self.counts.get(value, 0) + int(tally[code])
            return
        counts = pc.value_counts(array)
        for value, count in zip(counts.field("values").to_pylist(), counts.field("counts").to_pylist(), strict=True):
            if value is not None:
                self.counts[value] = self.counts.get(value, 0) + count

    def summary(self) -> dict[str, Any]:
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
