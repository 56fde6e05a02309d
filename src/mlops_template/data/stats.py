"""Running statistics of a table's columns, one Arrow record batch at a time: what a manifest says of each column.

Statistics of parts of one table merge into the whole's, so a file read in
parallel parts is summarised as if it were read in one stream.
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


def profile_batches(
    schema: pa.Schema, batches: Iterable[pa.RecordBatch], *, prefetch: bool = True, stop: threading.Event | None = None
) -> Profile:
    """Running statistics over batches; with `stop`, ends early once it is set (the result is then discarded)."""
    profile = Profile(schema)
    for batch in _prefetched(batches) if prefetch else batches:
        if stop is not None and stop.is_set():
            break
        profile.add(batch)
    return profile


class Profile:
    """Running statistics of a table's columns; profiles of parts of one table merge into the whole's."""

    def __init__(self, schema: pa.Schema) -> None:
        self.rows = 0
        self.columns = [_Column(field.name, field.type) for field in schema]

    def add(self, batch: pa.RecordBatch) -> None:
        self.rows += batch.num_rows
        for column, array in zip(self.columns, batch.columns, strict=True):
            column.add(array)

    def merge(self, other: Profile) -> None:
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
