"""Does a large query result stream, or is it held whole? The peak memory of fetching one, against its size.

A DuckDB file with a 4-column table of N rows (default 3 M). Each measurement is a process of its own that
reports its peak RSS (`ru_maxrss`):

  baseline   `result_file` on an aggregate over every column: what the database itself holds to read the table
             (DuckDB keeps the pages it read), the imports, and a one-row result
  fetch      `data.sql.result_file` on the whole table: chunks of CHUNK_ROWS rows into parquet parts, joined
  whole      `pandas.read_sql` of the same query in one piece, as a step would without read_sql

It prints the medians of N rounds (default 3) of each, less the baseline, and the result's size as a pandas
frame. Target: the fetch's peak above the baseline <= half the result's size.

    uv run python benchmarks/sql_fetch.py [--rows 3000000] [--runs 3]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

TARGET = 0.5

CHILD = """
import resource, sys
from pathlib import Path
import duckdb, pandas, pyarrow, sqlalchemy
from mlops_template.data import sql
url, mode = sys.argv[1], sys.argv[2]
# baseline: the database reads every column of the table (its own page cache) and returns one row
scan = "SELECT count(*), sum(id), sum(x), sum(y), max(label) FROM t"
text = scan if mode == "baseline" else "SELECT * FROM t"
if mode == "whole":
    frame = pandas.read_sql(sqlalchemy.text(text), sqlalchemy.create_engine(url).connect())
else:
    query = sql.Query(Path("q.sql"), "q.sql", text, "", "warehouse")
    with sql.result_file(url, query, environment="bench") as (path, rows):
        pass
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
"""


MAKE = """
import sys
import duckdb
with duckdb.connect(sys.argv[1]) as connection:
    connection.execute(
        "CREATE TABLE t AS SELECT i AS id, random() AS x, random() * 100 AS y, "
        f"'label-' || (i % 97) AS label FROM range({int(sys.argv[2])}) r(i)"
    )
    print(connection.execute("SELECT * FROM t").df().memory_usage(deep=True).sum())
"""


def peak(url: str, mode: str) -> int:
    done = subprocess.run([sys.executable, "-c", CHILD, url, mode], capture_output=True, text=True, check=True)
    return int(done.stdout.split()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=3_000_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    # Everything heavy happens in child processes: Linux carries a parent's peak RSS into its children.
    with tempfile.TemporaryDirectory(prefix="mlops-sql-bench-") as tmp:
        db = Path(tmp) / "warehouse.duckdb"
        size = int(subprocess.run([sys.executable, "-c", MAKE, str(db), str(args.rows)], capture_output=True,
                                  text=True, check=True).stdout.split()[-1])  # fmt: skip
        url = f"duckdb:///{db}"
        found: dict[str, list[int]] = {"baseline": [], "fetch": [], "whole": []}
        for _ in range(args.runs):
            for mode in found:
                found[mode].append(peak(url, mode))
    base = statistics.median(found["baseline"])
    mb = 1024 * 1024
    print(f"{args.rows:,} rows; the result as a pandas frame: {size / mb:,.0f} MB")
    for mode in ("fetch", "whole"):
        extra = statistics.median(found[mode]) - base
        print(f"{mode:6s} peak RSS {extra / mb:7,.0f} MB over the baseline ({base / mb:,.0f} MB)")
    ratio = (statistics.median(found["fetch"]) - base) / size
    print(f"fetch / result size {ratio:.2f}: {'PASS' if ratio <= TARGET else 'FAIL'} (target <= {TARGET})")


if __name__ == "__main__":
    main()
