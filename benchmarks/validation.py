"""What checking a table against its pandera schema costs, against storing the same table as a snapshot.

A 1 M-row table of 9 columns (6 numeric with gaps, 3 text) and a schema with a dtype, a range or a set
of allowed values per column. N rounds (default 5), interleaved: `validation.check` (pandera, lazy), and
`SnapshotStore.write_table` to a local folder (hashing, parquet, profile). It prints every time, the
medians and their ratio against the target: validation <= 10 % of the store's time.

    uv run python benchmarks/validation.py [--rows 1000000] [--runs 5]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

TARGET = 0.10


def table(rows: int) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    df = pd.DataFrame({f"n{i}": rng.normal(50, 10, rows) for i in range(6)})
    for i in range(6):
        df.loc[rng.random(rows) < 0.05, f"n{i}"] = np.nan
    for i, values in enumerate((["basic", "pro", "team"], ["north", "south"], ["a", "b", "c", "d"])):
        df[f"t{i}"] = rng.choice(values, rows).astype(object)
    return df


def schema():
    import pandera.pandas as pa

    numeric = {f"n{i}": pa.Column(float, pa.Check.in_range(-1e6, 1e6), nullable=True) for i in range(6)}
    text = {
        "t0": pa.Column(str, pa.Check.isin(["basic", "pro", "team"])),
        "t1": pa.Column(str, pa.Check.isin(["north", "south"])),
        "t2": pa.Column(str, pa.Check.isin(["a", "b", "c", "d"])),
    }
    return pa.DataFrameSchema({**numeric, **text}, strict=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    from mlops_template.data.snapshots import SnapshotStore
    from mlops_template.data.validation import check
    from mlops_template.storage.local import LocalStorage

    df, checks = table(args.rows), schema()
    checked, stored = [], []
    with tempfile.TemporaryDirectory(prefix="mlops-validation-") as tmp:
        store = SnapshotStore(LocalStorage(Path(tmp)))
        for i in range(args.runs + 1):  # the first round warms up
            started = time.perf_counter()
            assert check(df, checks, "table") is None
            seconds = time.perf_counter() - started
            if i:
                checked.append(seconds)
            started = time.perf_counter()
            store.write_table(f"table{i}", df)
            seconds = time.perf_counter() - started
            if i:
                stored.append(seconds)
    a, b = statistics.median(checked), statistics.median(stored)
    print(f"{args.rows:,} rows x {df.shape[1]} columns, {args.runs} rounds")
    print(f"validate  median {a:.3f} s  ({', '.join(f'{v:.3f}' for v in checked)})")
    print(f"store     median {b:.3f} s  ({', '.join(f'{v:.3f}' for v in stored)})")
    print(f"ratio {a / b:.1%}: {'PASS' if a / b <= TARGET else 'FAIL'} (target <= {TARGET:.0%})")


if __name__ == "__main__":
    main()
