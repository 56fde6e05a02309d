"""Score a dataset with the registry's champion model.

With the Dask engine the workers score the partitions in parallel and write the
predictions as parts; the model goes to each worker once, not once per partition.
"""

import pandas as pd
from mlops_template import StepContext


def predict(ctx: StepContext) -> None:
    champion = ctx.load_champion()
    dataset = ctx.params["dataset"]
    if dataset == "heldout":  # the rows held out when the champion was trained, read by snapshot id
        ctx.write_predictions(score(ctx.read_snapshot(champion.heldout), champion))
        return
    df = ctx.read(dataset, engine=ctx.engine)
    if ctx.engine != "dask":
        ctx.write_predictions(score(df, champion))
        return
    from dask import delayed

    model = delayed(champion, pure=True)  # one key of the graph, which every partition's task depends on
    probe = df.head(1)  # a row of the first partition, to learn the columns and dtypes the scoring returns
    meta = score(probe if len(probe) else df._meta_nonempty.head(1), champion).iloc[:0]
    ctx.write_predictions(df.map_partitions(score, model, meta=meta))  # written by the workers, part by part


def score(df: pd.DataFrame, champion) -> pd.DataFrame:
    """The rows with the champion's `prediction` and its `model_version`."""
    return df.assign(prediction=champion.predict(df), model_version=int(champion.version))
