"""A table read through Dask has the dtypes the pandas engine gives it, so the same step code works on both."""

from __future__ import annotations

import dask.dataframe as dd
import numpy as np
import pandas as pd
from sklearn.preprocessing import OneHotEncoder

from mlops_template.data.snapshots import SnapshotStore
from mlops_template.storage import LocalStorage


def test_text_with_gaps_reads_alike_on_both_engines_and_encodes(tmp_path):
    rng = np.random.default_rng(3)
    df = pd.DataFrame(
        {
            "plan": rng.choice(["basic", "pro", None], 400),
            "spend": np.where(rng.random(400) < 0.1, np.nan, rng.random(400)),
            "label": rng.choice(["yes", "no"], 400),
        }
    )
    store = SnapshotStore(LocalStorage(tmp_path))
    snapshot = store.write_dask("table", dd.from_pandas(df, npartitions=4)).snapshot

    _, by_pandas = store.read(snapshot)
    _, lazy = store.read_dask(snapshot)
    by_dask = lazy.compute().reset_index(drop=True)

    assert by_dask.dtypes.to_dict() == by_pandas.dtypes.to_dict()
    pd.testing.assert_frame_equal(by_dask, by_pandas)
    # What the template's model does first with text: missing values must be NaN, not pd.NA, for the encoder.
    encoded = OneHotEncoder(handle_unknown="ignore").fit_transform(by_dask[["plan"]])
    assert encoded.shape == (400, 3)


def test_after_the_clients_close_dask_computes_in_this_process(tmp_path):
    from mlops_template.config.load import Environment
    from mlops_template.data import engines

    env = Environment(name="local", storage=str(tmp_path), tracking_uri="sqlite:///x.db")
    client = engines.dask_client(env)
    assert client.submit(sum, [1, 2]).result() == 3
    engines.close_clients()
    assert dd.from_pandas(pd.DataFrame({"a": [1, 2, 3]}), npartitions=2)["a"].sum().compute() == 6
