"""`read_predictions`: a pipeline run's stored predictions by its id, from a local folder or an S3 bucket."""

from __future__ import annotations

import io

import boto3
import pandas as pd
import pytest
from conftest import project_client

from mlops_template import Pipeline, StepContext, load_config, read_predictions
from mlops_template.errors import StorageError
from mlops_template.pipeline.runner import run_pipeline

S3_ENVIRONMENT = """
[environments.s3test]
storage = "s3://{bucket}/p"
tracking_uri = "{tracking}"
s3_endpoint_url = "{endpoint}"
"""

SCORED = pd.DataFrame({"x": [0.5, 1.5, 2.5], "prediction": ["a", "b", "a"], "model_version": [3, 3, 3]})


def score(ctx: StepContext) -> None:
    ctx.write_predictions(SCORED)


@pytest.fixture(params=["local", "s3"])
def environment(request, tiny_project, shared_db) -> str:
    """The tiny project's environment: its local folder, or an S3 bucket on moto's server."""
    if request.param == "local":
        return "local"
    endpoint, bucket = request.getfixturevalue("s3_endpoint"), request.getfixturevalue("s3_bucket")
    with open(tiny_project / "mlops.toml", "a") as toml:
        toml.write(S3_ENVIRONMENT.format(bucket=bucket, tracking=shared_db, endpoint=endpoint))
    return "s3test"


def stored_bytes(config, environment: str, key: str) -> bytes:
    """The object as the storage holds it, read around the library: a file, or an S3 object through boto3."""
    env = config.environment(environment)
    if env.storage.startswith("s3://"):
        bucket, _, prefix = env.storage.removeprefix("s3://").partition("/")
        s3 = boto3.client("s3", endpoint_url=env.s3_endpoint_url, region_name="us-east-1")
        return s3.get_object(Bucket=bucket, Key=f"{prefix}/{key}")["Body"].read()
    with open(f"{env.storage}/{key}", "rb") as file:
        return file.read()


def test_reads_the_predictions_a_pipeline_run_stored(tiny_project, environment):
    config = load_config(tiny_project)
    first = run_pipeline(Pipeline([score]), config, environment=environment)
    second = run_pipeline(Pipeline([score]), config, environment=environment)

    for result in (first, second):
        df = read_predictions(config, result.run_id, environment)
        pd.testing.assert_frame_equal(df, SCORED)
        stored = stored_bytes(config, environment, f"predictions/{result.run_id}.parquet")
        pd.testing.assert_frame_equal(pd.read_parquet(io.BytesIO(stored)), df)
    assert read_predictions(config, first.run_id, config.environment(environment)).equals(SCORED)


def test_reads_what_the_template_predict_step_wrote(trained_project):
    project = trained_project.root
    client = project_client(project)
    experiment = client.get_experiment_by_name("iris-e2e")
    [predict] = client.search_runs([experiment.experiment_id], "tags.`mlops.step` = 'predict'")
    run_id = predict.data.tags["mlflow.parentRunId"]

    df = read_predictions(load_config(project), run_id)

    pd.testing.assert_frame_equal(df, pd.read_parquet(project / "data" / "predictions" / f"{run_id}.parquet"))
    assert len(df) == 45 and set(df["model_version"]) == {1}


def test_a_run_without_predictions_says_which_and_what_to_do(tiny_project, environment):
    config = load_config(tiny_project)
    result = run_pipeline(Pipeline([no_predictions]), config, environment=environment)
    with pytest.raises(StorageError) as excinfo:
        read_predictions(config, result.run_id, environment)
    message = str(excinfo.value)
    assert message.startswith(f"pipeline run '{result.run_id}' stored no predictions in environment '{environment}' (")
    assert f"predictions/{result.run_id}.parquet)" in message
    assert "pass the id of a run whose predict step finished (`mlops runs`)" in message
    assert isinstance(excinfo.value.__cause__.__cause__, FileNotFoundError)


def no_predictions(ctx: StepContext) -> None:
    ctx.log_metrics({"rows": 0})


@pytest.mark.parametrize("run_id", ["", "../datasets/numbers", "a/b", "abc.parquet"])
def test_a_malformed_run_id_is_refused_before_reading(tiny_project, run_id):
    with pytest.raises(StorageError, match=r"pipeline run id .* is invalid; pass the id `mlops runs` lists"):
        read_predictions(load_config(tiny_project), run_id)
