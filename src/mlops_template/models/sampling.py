"""The rows a model trains on: the whole table when it is small enough, else a seeded sample of it.

A table larger than memory (a Dask frame) is counted once and sampled on the
workers: only the rows kept come into this process. A classification sample
keeps every class in proportion (each at least one row); a regression sample
is a plain one. Both engines sample by the same rule: the rows with the
smallest seeded random keys, per class.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mlops_template.config.metrics import CLASSIFICATION
from mlops_template.data.engines import is_dask

if TYPE_CHECKING:
    import pandas as pd

_KEY = "__sample_key__"


@dataclass(frozen=True)
class TrainingRows:
    """What `training_rows` kept: the rows (in memory), how many there were, and whether they are a sample."""

    rows: pd.DataFrame
    available: int
    limit: int | None
    stratified: bool

    @property
    def sampled(self) -> bool:
        return len(self.rows) < self.available

    def describe(self) -> str:
        """One line for the step's log: all rows, or which sample of how many."""
        if not self.sampled:
            return f"training on all {self.available} rows (max_train_rows = {self.limit})"
        kind = "stratified" if self.stratified else "random"
        return (
            f"training on a {kind} sample of {len(self.rows)} of {self.available} rows (max_train_rows = {self.limit})"
        )

    def metrics(self) -> dict[str, int]:
        return {"rows_available": self.available, "rows_sampled": len(self.rows)}


def training_rows(df: Any, target: str, task: str, *, limit: int | None, seed: int) -> TrainingRows:
    """`df` (pandas or Dask) in memory: whole, or a seeded sample of `limit` rows when it has more."""
    import pandas as pd

    dask = is_dask(df)
    by = target if task == CLASSIFICATION else None
    if by is not None:  # rows per class: the one pass that counts the table
        counts = df[by].value_counts()
        counts = counts.compute() if dask else counts
    else:
        counts = pd.Series([len(df)])
    available = int(counts.sum())
    if limit is None or available <= limit:
        rows = df.compute().reset_index(drop=True) if dask else df
        return TrainingRows(rows, available, limit, by is not None)
    quotas = _quotas(counts, limit)
    if dask:  # on the workers: a seeded key per row, and a few more rows than needed kept per class
        share = (quotas / counts + 5 * (quotas / counts / counts) ** 0.5 + 10 / counts).clip(upper=1.0)
        meta = df._meta.assign(**{_KEY: pd.Series(dtype="float64")})
        df = df.map_partitions(_keyed, by, share.to_dict(), seed, meta=meta).compute()
    else:
        import numpy as np

        df = df.assign(**{_KEY: np.random.default_rng([seed, 0]).random(len(df))})
    rows = _smallest_keys(df, by, quotas).drop(columns=_KEY)
    return TrainingRows(rows, available, limit, by is not None)


def _quotas(counts: pd.Series, limit: int) -> pd.Series:
    """Rows to take per class: in proportion to its rows, at least one, `limit` in all (largest remainders)."""
    share = counts * limit / counts.sum()
    quotas = share.astype("int64").clip(lower=1)
    short = limit - int(quotas.sum())
    if short > 0:  # the classes with the largest fractions left over get one row more
        quotas.loc[(share - share.astype("int64")).sort_values(ascending=False, kind="stable").index[:short]] += 1
    for _ in range(-short):  # one row granted to every small class is taken from the largest
        if quotas.max() <= 1:
            break
        quotas.loc[quotas.idxmax()] -= 1
    return quotas


def _keyed(part: pd.DataFrame, by: str | None, share: dict, seed: int, partition_info=None) -> pd.DataFrame:
    """On a worker: a seeded random key per row, and the rows whose key is under their class's share."""
    import numpy as np

    key = np.random.default_rng([seed, (partition_info or {}).get("number", 0)]).random(len(part))
    kept = part[by].map(share).to_numpy("float64", na_value=0.0) if by is not None else share[0]
    return part.assign(**{_KEY: key})[key < kept]


def _smallest_keys(df: pd.DataFrame, by: str | None, quotas: pd.Series) -> pd.DataFrame:
    """The rows with each class's `quotas[class]` smallest keys, in their order: a uniform sample per class."""
    if by is None:
        rank, quota = df[_KEY].rank(method="first"), quotas.iloc[0]
    else:
        rank, quota = df.groupby(by)[_KEY].rank(method="first"), df[by].map(quotas)
    return df[rank <= quota].reset_index(drop=True)
