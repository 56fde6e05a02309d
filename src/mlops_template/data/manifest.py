"""What a snapshot holds, summarised: rows, schema, and per-column statistics.

A table, a parquet file or a CSV file is fed as Arrow record batches, one at
a time, to the running statistics of `mlops_template.data.stats`, so a file of
any size is summarised in constant memory; a large CSV file is read in
parallel parts whose statistics merge.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mlops_template.data.stats import Profile, profile_batches

if TYPE_CHECKING:
    import pyarrow as pa

_CSV_BLOCK = 4 << 20
_CSV_PARALLEL_MIN = 32 << 20
_CSV_MAX_BLOCK = 1 << 30  # Arrow's block size is an int32
_PARQUET_BATCH = 1 << 18  # rows; small batches reuse the same memory instead of faulting in more


def profile_table(table: pa.Table) -> dict[str, Any]:
    return profile_batches(table.schema, table.to_batches(), prefetch=False).summary()


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
        return profile_batches(f.schema_arrow, f.iter_batches(batch_size=_PARQUET_BATCH)).summary()


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
            return profile_batches(first.schema, first).summary()
        return _profile_parts(first.schema, readers).summary()
    except pa.ArrowInvalid as exc:
        column = _failed_column(str(exc), first.schema) if first is not None else None
        if column is None:
            raise
        raise _Misfit(column, first.schema.field(column).type) from exc
    finally:
        source.close()


def _profile_parts(schema: pa.Schema, readers: list) -> Profile:
    """Profile parts of one file in threads and merge them; the first part that fails stops the others."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    stop = threading.Event()

    def run(reader) -> Profile:
        try:
            return profile_batches(schema, reader, prefetch=False, stop=stop)
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
