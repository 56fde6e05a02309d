"""Score a dataset with the registry's champion model."""

from mlops_template import StepContext


def predict(ctx: StepContext) -> None:
    champion = ctx.load_champion()
    df = ctx.read(ctx.params["dataset"])
    ctx.write_predictions(df.assign(prediction=champion.predict(df), model_version=int(champion.version)))
