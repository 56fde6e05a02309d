"""Score a dataset with the registry's champion model."""

from mlops_template import StepContext


def predict(ctx: StepContext) -> None:
    champion = ctx.load_champion()
    dataset = ctx.params["dataset"]
    # "heldout": the rows held out when the champion was trained, read by snapshot id.
    df = ctx.read_snapshot(champion.heldout) if dataset == "heldout" else ctx.read(dataset)
    ctx.write_predictions(df.assign(prediction=champion.predict(df), model_version=int(champion.version)))
