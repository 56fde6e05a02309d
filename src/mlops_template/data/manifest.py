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
    import threading

    import pyarrow as pa

MAX_CATEGORIES = 50  # a column with more distinct values has no "top values"
TOP_VALUES = 10
_CSV_BLOCK = 4 << 20
_CSV_PARALLEL_MIN = 32 << 20
_CSV_MAX_BLOCK = 1 << 30  # Arrow's block size is an int32
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


def _profile_csv(path: str) -> dict[str, Any]:
    """Profile a CSV file with the types the table reader gives it, in parallel parts when it is large.

    Parts are cut at line breaks outside quoted values. Like Arrow's own
    parallel reader, each part is split into blocks assuming no quoted value
    holds a line break; a file where one does fails to parse that way and is
    read again as one stream that allows them (and a row longer than a block,
    with larger blocks). Types are inferred from the first block; a later value
    that does not fit moves its column on along Arrow's inference order and the
    profile restarts, so each column ends on the type that reading the whole
    file gives it.
    """
    import pyarrow as pa

    column_types: dict[str, pa.DataType] = {}
    newlines_in_values, block_size = False, _CSV_BLOCK
    while True:
        try:
            return _profile_csv_pass(path, column_types, newlines_in_values, block_size)
        except _Misfit as misfit:
            wider = _next_fitting_type(path, misfit.column, misfit.type, block_size)
            if wider is None:
                raise misfit.__cause__ from None
            column_types[misfit.column] = wider
        except pa.ArrowInvalid as exc:
            if "straddl" in str(exc) and block_size < _CSV_MAX_BLOCK:
                block_size *= 4  # a row longer than a block: Arrow needs each in at most two
            elif not newlines_in_values:
                newlines_in_values = True
            else:
                raise


class _Misfit(Exception):
    """A value in a CSV file that its column's type does not take."""

    def __init__(self, column: str, arrow_type: pa.DataType) -> None:
        super().__init__(f"column {column!r}: a value is not {arrow_type}")
        self.column = column
        self.type = arrow_type


def _profile_csv_pass(path: str, column_types: dict, newlines_in_values: bool, block_size: int) -> dict[str, Any]:
    """One pass over a CSV file with the types found so far; a value that does not fit raises :class:`_Misfit`."""
    import pyarrow as pa
    import pyarrow.csv as csv

    from mlops_template.data.tables import csv_convert_options, csv_parse_options

    source = pa.memory_map(path)
    bounds = [(0, source.size())] if newlines_in_values else _csv_parts(path, source.size())
    parse = csv_parse_options(newlines_in_values=newlines_in_values)

    def reader(start: int, end: int, schema: pa.Schema | None = None) -> csv.CSVStreamingReader:
        read = csv.ReadOptions(
            block_size=block_size, column_names=schema.names if schema else None, use_threads=len(bounds) == 1
        )
        convert = csv_convert_options({f.name: f.type for f in schema} if schema else column_types)
        body = pa.BufferReader(source.read_at(end - start, start))
        return csv.open_csv(body, read_options=read, parse_options=parse, convert_options=convert)

    first: csv.CSVStreamingReader | None = None
    try:
        first = reader(*bounds[0])
        readers = [first] + [reader(start, end, first.schema) for start, end in bounds[1:]]
        if len(readers) == 1:
            return _profile(first.schema, first).summary()
        return _profile_parts(first.schema, readers).summary()
    except pa.ArrowInvalid as exc:
        column = _failed_column(str(exc), first.schema) if first is not None else None
        if column is None:
            raise
        raise _Misfit(column, first.schema.field(column).type) from exc
    finally:
        source.close()


def _profile_parts(schema: pa.Schema, readers: list) -> _Profile:
    """Profile parts of one file in threads and merge them; the first part that fails stops the others."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    stop = threading.Event()

    def run(reader) -> _Profile:
        try:
            return _profile(schema, reader, prefetch=False, stop=stop)
        except BaseException:
            stop.set()
            raise

    with ThreadPoolExecutor(len(readers)) as pool:
        futures = [pool.submit(run, r) for r in readers]
    profiles = [f.result() for f in futures]  # raises the first failure, before any stopped part is merged
    for other in profiles[1:]:
        profiles[0].merge(other)
    return profiles[0]


def _next_fitting_type(path: str, column: str, arrow_type: pa.DataType, block_size: int) -> pa.DataType | None:
    """The next type after `arrow_type` in Arrow's inference order that takes every value of the first block.

    Types the first block already rules out are skipped without a pass over
    the whole file; the pass that follows tries the rest.
    """
    import pyarrow as pa
    import pyarrow.csv as csv

    from mlops_template.data.tables import csv_convert_options, csv_parse_options, looser

    candidate = looser(arrow_type)
    while candidate is not None:
        convert = csv_convert_options({column: candidate})
        convert.include_columns = [column]
        read = csv.ReadOptions(block_size=block_size, use_threads=False)
        try:
            with csv.open_csv(path, read_options=read, parse_options=csv_parse_options(), convert_options=convert) as f:
                f.read_next_batch()
        except pa.ArrowInvalid as exc:
            if "CSV conversion error" in str(exc):
                candidate = looser(candidate)
                continue
        except StopIteration:  # a header and no rows
            pass
        return candidate
    return None


def _csv_parts(path: str, size: int) -> list[tuple[int, int]]:
    """Byte ranges that end at line breaks outside quoted values, two per core for a large file."""
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
        if mm.find(b'"') >= 0:
            cuts = _outside_quotes(mm, cuts)
    return list(zip(cuts[:-1], cuts[1:], strict=True))


def _outside_quotes(mm, cuts: list[int]) -> list[int]:
    """Move each cut that falls inside a quoted value to the next line break after it.

    A line break is outside quotes when an even number of quote characters
    precedes it (an escaped quote is two). Quotes are counted per part in
    threads, a block at a time (NumPy compares without the GIL).
    """
    import os
    from concurrent.futures import ThreadPoolExecutor

    import numpy as np

    def quotes(start: int, end: int) -> int:
        blocks = range(start, end, _CSV_BLOCK)
        return sum(
            int(np.count_nonzero(np.frombuffer(mm[i : min(i + _CSV_BLOCK, end)], np.uint8) == 34)) for i in blocks
        )

    with ThreadPoolExecutor(min(len(cuts) - 1, os.cpu_count() or 1)) as pool:
        counts = list(pool.map(quotes, cuts[:-2], cuts[1:-1]))  # the quotes before each inner cut
    size, inside, safe = cuts[-1], 0, [0]
    for cut, count in zip(cuts[1:-1], counts, strict=True):
        inside ^= count & 1  # at `cut`: an odd number of quotes before it
        position, open_quote = cut, inside
        while open_quote and position < size:
            end = mm.find(b"\n", position)
            end = size if end < 0 else end + 1
            open_quote ^= mm[position:end].count(b'"') & 1
            position = end
        if safe[-1] < position < size:
            safe.append(position)
    return [*safe, size]


def _failed_column(message: str, schema: pa.Schema) -> str | None:
    import re

    found = re.search(r"CSV column #(\d+)", message)
    return schema.names[int(found.group(1))] if found else None


def _profile(
    schema: pa.Schema, batches: Iterable[pa.RecordBatch], *, prefetch: bool = True, stop: threading.Event | None = None
) -> _Profile:
    """Running statistics over batches; with `stop`, ends early once it is set (the result is then discarded)."""
    profile = _Profile(schema)
    for batch in _prefetched(batches) if prefetch else batches:
        if stop is not None and stop.is_set():
            break
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
