"""How two dataset versions differ: schema, rows, and per-column drift.

Rows are matched by a hash of the whole row over the columns both versions
share (a retyped numeric column compared as float, any other retyped column as
text), counted as multisets so duplicates are accounted for. Drift per shared
column: null rate, mean/std shift, the two-sample Kolmogorov–Smirnov statistic
and the population stability index (PSI, ten quantile bins of A) for numeric
columns; the share shift (total variation distance) and PSI over categories
for the others. A column is flagged when its PSI exceeds 0.2 and the shift is
larger than sampling noise at the 5 % level, or its null rate moved by five
points or more.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from mlops_template.errors import DataError

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from mlops_template.data.layout import Snapshot
    from mlops_template.data.snapshots import SnapshotStore

PSI_DRIFT = 0.2  # the usual reading: < 0.1 stable, 0.1–0.2 moderate, > 0.2 shifted
NULL_RATE_DRIFT = 0.05
KS_CRITICAL = 1.358  # two-sample KS at the 5 % level; the same bound is applied to a categorical share shift
_BINS = 10
_EPS = 1e-4


@dataclass
class ColumnDrift:
    name: str
    kind: str  # numeric | categorical
    null_rate_a: float
    null_rate_b: float
    count_a: int = 0  # non-null values
    count_b: int = 0
    mean_a: float | None = None
    mean_b: float | None = None
    std_a: float | None = None
    std_b: float | None = None
    mean_shift: float | None = None  # (mean B − mean A) in standard deviations of A
    ks: float | None = None
    psi: float | None = None
    share_shift: float | None = None
    top_changes: list[tuple[str, float, float]] = field(default_factory=list)  # value, share in A, share in B

    @property
    def drifted(self) -> bool:
        """A PSI above 0.2 that is not sampling noise (KS beyond its 5 % critical value), or a null-rate change."""
        if abs(self.null_rate_b - self.null_rate_a) >= NULL_RATE_DRIFT:
            return True
        if self.psi is None or self.psi < PSI_DRIFT or not self.count_a or not self.count_b:
            return False
        noise = KS_CRITICAL * math.sqrt((self.count_a + self.count_b) / (self.count_a * self.count_b))
        gap = self.ks if self.kind == "numeric" else self.share_shift
        return gap is not None and gap > noise


@dataclass
class DataDiff:
    a: str
    b: str
    rows_a: int
    rows_b: int
    added: list[tuple[str, str]]  # columns only in B: name, dtype
    removed: list[tuple[str, str]]  # columns only in A
    retyped: list[tuple[str, str, str]]  # name, dtype in A, dtype in B
    compared_on: list[str]
    only_in_a: int
    only_in_b: int
    rows_only_in_a: list[dict[str, Any]]  # the first `limit` of them
    rows_only_in_b: list[dict[str, Any]]
    columns: list[ColumnDrift]

    @property
    def identical(self) -> bool:
        return not (self.added or self.removed or self.retyped or self.only_in_a or self.only_in_b)

    @property
    def drifted(self) -> list[str]:
        return [c.name for c in self.columns if c.drifted]

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["identical"] = self.identical
        out["drifted"] = self.drifted
        for column, drift in zip(out["columns"], self.columns, strict=True):
            column["drifted"] = drift.drifted
        return out


def diff_snapshots(store: SnapshotStore, a: str | Snapshot, b: str | Snapshot, *, limit: int = 10) -> DataDiff:
    """Compare two stored versions (each verified against its id as it loads).

    Partitioned snapshots (written from Dask) are refused for now: comparing
    them row by row would collect both into this process.
    """
    snap_a, snap_b = (s if not isinstance(s, str) else store.resolve(s) for s in (a, b))
    partitioned = [s for s in (snap_a, snap_b) if s.partitioned]
    if partitioned:
        which = " and ".join(f"{s.ref} ({len(s.partitions):,} parts)" for s in partitioned)
        raise DataError(
            f"diff of partitioned snapshots is not supported yet: {which} "
            f"{'is' if len(partitioned) == 1 else 'are'} partitioned; compare their manifests instead "
            f"(`mlops data show {snap_a.ref}` and `mlops data show {snap_b.ref}`: rows, columns, statistics), "
            "or read both with `mlops data get`"
        )
    snap_a, df_a = store.read(snap_a)
    snap_b, df_b = store.read(snap_b)
    return diff_frames(df_a, df_b, a=snap_a.ref, b=snap_b.ref, limit=limit)


def diff_frames(df_a: pd.DataFrame, df_b: pd.DataFrame, *, a: str = "A", b: str = "B", limit: int = 10) -> DataDiff:
    """Compare two tables; `a`/`b` label them in the result."""
    import pandas as pd

    types_a, types_b = _dtypes(df_a), _dtypes(df_b)
    shared = [c for c in df_a.columns if c in types_b]
    retyped = [(c, types_a[c], types_b[c]) for c in shared if types_a[c] != types_b[c]]
    left, right = df_a[shared].copy(), df_b[shared].copy()
    for column, _, _ in retyped:
        both_numeric = _is_numeric(left[column]) and _is_numeric(right[column])
        left[column] = left[column].astype("float64") if both_numeric else left[column].astype(str)
        right[column] = right[column].astype("float64") if both_numeric else right[column].astype(str)

    hash_a = pd.util.hash_pandas_object(left, index=False).to_numpy()
    hash_b = pd.util.hash_pandas_object(right, index=False).to_numpy()
    surplus_a, surplus_b = _surplus(hash_a, hash_b), _surplus(hash_b, hash_a)

    return DataDiff(
        a=a,
        b=b,
        rows_a=len(df_a),
        rows_b=len(df_b),
        added=[(c, types_b[c]) for c in df_b.columns if c not in types_a],
        removed=[(c, types_a[c]) for c in df_a.columns if c not in types_b],
        retyped=retyped,
        compared_on=shared,
        only_in_a=int(surplus_a.sum()),
        only_in_b=int(surplus_b.sum()),
        rows_only_in_a=_records(df_a, surplus_a, limit),
        rows_only_in_b=_records(df_b, surplus_b, limit),
        columns=[_drift(c, left[c], right[c]) for c in shared],
    )


def _dtypes(df: pd.DataFrame) -> dict[Any, str]:
    """Column types as Arrow names, the same words the manifests use (`mixed` where Arrow finds none)."""
    import pyarrow as pa

    from mlops_template.data.stats import type_name

    types: dict[Any, str] = {}
    for column in df.columns:
        try:
            types[column] = type_name(pa.Array.from_pandas(df[column]).type)
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            types[column] = "mixed"
    return types


def _is_numeric(series: pd.Series) -> bool:
    from pandas.api.types import is_bool_dtype, is_numeric_dtype

    return is_numeric_dtype(series) and not is_bool_dtype(series)


def _surplus(mine: np.ndarray, theirs: np.ndarray) -> np.ndarray:
    """Per row of `mine`: whether it is a copy `theirs` lacks (the k-th copy of a row, when `theirs` has fewer than k)."""
    import pandas as pd

    rows = pd.Series(mine)
    occurrence = rows.groupby(mine).cumcount().to_numpy() + 1
    available = rows.map(pd.Series(theirs).value_counts()).fillna(0).to_numpy()
    return occurrence > available


def _records(df: pd.DataFrame, surplus: np.ndarray, limit: int) -> list[dict[str, Any]]:
    import json

    rows = df.loc[surplus].head(limit)
    return json.loads(rows.to_json(orient="records", date_format="iso"))


def _drift(name: str, a: pd.Series, b: pd.Series) -> ColumnDrift:
    null_a = float(a.isna().mean()) if len(a) else 0.0
    null_b = float(b.isna().mean()) if len(b) else 0.0
    a, b = a.dropna(), b.dropna()
    if _is_numeric(a) and _is_numeric(b):
        x, y = a.to_numpy(dtype="float64"), b.to_numpy(dtype="float64")
        mean_a, mean_b = _stat(x, "mean"), _stat(y, "mean")
        std_a, std_b = _stat(x, "std"), _stat(y, "std")
        shift = None
        if mean_a is not None and mean_b is not None and std_a:
            shift = (mean_b - mean_a) / std_a
        return ColumnDrift(
            name,
            "numeric",
            null_a,
            null_b,
            len(x),
            len(y),
            mean_a=mean_a,
            mean_b=mean_b,
            std_a=std_a,
            std_b=std_b,
            mean_shift=shift,
            ks=_ks(x, y),
            psi=_numeric_psi(x, y),
        )
    share_a = a.astype(str).value_counts(normalize=True)
    share_b = b.astype(str).value_counts(normalize=True)
    both = share_a.index.union(share_b.index)
    pa_, pb_ = share_a.reindex(both, fill_value=0.0), share_b.reindex(both, fill_value=0.0)
    change = (pb_ - pa_).abs().sort_values(ascending=False)
    return ColumnDrift(
        name,
        "categorical",
        null_a,
        null_b,
        len(a),
        len(b),
        share_shift=float(0.5 * (pb_ - pa_).abs().sum()) if len(a) and len(b) else None,
        psi=_psi(pa_.to_numpy(), pb_.to_numpy()) if len(a) and len(b) else None,
        top_changes=[(str(v), float(pa_[v]), float(pb_[v])) for v in change.index[:3] if change[v] > 0],
    )


def _stat(values: np.ndarray, which: str) -> float | None:
    if not len(values):
        return None
    if which == "mean":
        return float(values.mean())
    return float(values.std(ddof=1)) if len(values) > 1 else 0.0


def _ks(x: np.ndarray, y: np.ndarray) -> float | None:
    """The largest gap between the two empirical distribution functions."""
    import numpy as np

    if not len(x) or not len(y):
        return None
    x, y = np.sort(x), np.sort(y)
    points = np.concatenate([x, y])
    gap = np.abs(np.searchsorted(x, points, "right") / len(x) - np.searchsorted(y, points, "right") / len(y))
    return float(gap.max())


def _numeric_psi(x: np.ndarray, y: np.ndarray) -> float | None:
    """PSI over A's deciles, with one more bin below A's minimum and one above its maximum."""
    import numpy as np

    if not len(x) or not len(y):
        return None
    low = x.min()
    edges = np.unique(np.append(np.quantile(x, np.linspace(0, 1, _BINS + 1)[1:-1]), x.max()))

    def shares(values: np.ndarray) -> np.ndarray:
        bins = np.searchsorted(edges, values, "left") + 1
        bins[values < low] = 0
        return np.bincount(bins, minlength=len(edges) + 2) / len(values)

    return _psi(shares(x), shares(y))


def _psi(share_a: np.ndarray, share_b: np.ndarray) -> float:
    import numpy as np

    p, q = np.clip(share_a, _EPS, None), np.clip(share_b, _EPS, None)
    value = float(np.sum((q - p) * np.log(q / p)))
    return 0.0 if math.isclose(value, 0.0, abs_tol=1e-12) else value
