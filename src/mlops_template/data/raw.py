"""Raw input files: the CSV, parquet and JSON-lines files under a storage's `raw/`, read as one table.

pandas reads them whole, with the library's one table reader; Dask reads each
in blocks on its workers. Every file of one read must have the same columns.
"""

from __future__ import annotations

import fnmatch
from typing import TYPE_CHECKING

from mlops_template.data.tables import read_table
from mlops_template.errors import DataError

if TYPE_CHECKING:
    import pandas as pd
    from dask.dataframe import DataFrame as DaskFrame

    from mlops_template.storage import Storage

RAW_PREFIX = "raw"
RAW_FORMATS = (".csv", ".parquet", ".jsonl", ".json")  # .json as JSON lines, one record a line
_JSON = (".jsonl", ".json")
NO_FILES = ""  # `files_digest` of no files


def raw_keys(storage: Storage, pattern: str = "*") -> list[str]:
    """The raw files' keys in name order; `pattern` is a glob relative to `raw/`."""
    keys = [k for k in storage.list(RAW_PREFIX) if k.endswith(RAW_FORMATS)]
    if pattern == "*":
        return keys
    return [k for k in keys if fnmatch.fnmatchcase(k.removeprefix(f"{RAW_PREFIX}/"), pattern)]


def files_digest(storage: Storage, keys: list[str]) -> str:
    """One digest of the raw files `keys`: their names and contents (S3's ETags, which change with them)."""
    import json

    from mlops_template.data.hashing import digest_bytes, digest_file

    if not keys:
        return NO_FILES
    remote = storage.etags(RAW_PREFIX) if storage.local_path(keys[0]) is None else {}
    files = {key: remote.get(key) or digest_file(storage.local_path(key) or "") for key in keys}
    return digest_bytes(json.dumps(files, sort_keys=True).encode())


def read_pandas(storage: Storage, keys: list[str]) -> pd.DataFrame:
    """The files as one DataFrame, in this process."""
    import pandas as pd

    frames = [_json_lines(storage, k) if k.endswith(_JSON) else read_table(storage, k) for k in keys]
    _same_columns(storage, keys, [list(f.columns) for f in frames])
    return pd.concat(frames, ignore_index=True)


def read_dask(storage: Storage, keys: list[str]) -> DaskFrame:
    """The files as one Dask frame, each read in blocks by the workers."""
    import dask.dataframe as dd

    from mlops_template.data.partitioned import BLOCK

    options = storage.fsspec_options()
    frames = []
    for key in keys:
        uri = storage.uri(key)
        try:
            if key.endswith(".csv"):
                frames.append(dd.read_csv(uri, blocksize=BLOCK, storage_options=options, assume_missing=True))
            elif key.endswith(".parquet"):
                frames.append(dd.read_parquet(uri, storage_options=options))
            else:
                frames.append(dd.read_json(uri, lines=True, blocksize=BLOCK, storage_options=options))
        except Exception as exc:  # noqa: BLE001 - each reader fails its own way; the file is what matters
            raise DataError(f"{uri}: cannot be read ({type(exc).__name__}: {exc}); is it a complete file?") from exc
    _same_columns(storage, keys, [list(f.columns) for f in frames])
    return dd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]


def _json_lines(storage: Storage, key: str) -> pd.DataFrame:
    import io

    import pandas as pd

    return pd.read_json(io.BytesIO(storage.read_bytes(key)), lines=True)


def _same_columns(storage: Storage, keys: list[str], columns: list[list[str]]) -> None:
    """Refuse files whose columns are not the first file's, naming both."""
    from mlops_template.data.partitioned import columns_differ

    for key, other in zip(keys[1:], columns[1:], strict=True):
        if other != columns[0]:
            raise columns_differ(storage.uri(keys[0]), columns[0], storage.uri(key), other)
