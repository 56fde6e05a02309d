"""The template's pipeline on other storage: an S3 bucket (moto's server on loopback) and raw CSV input."""

from __future__ import annotations

import io
import os

import boto3
import pandas as pd
from click.testing import CliRunner
from mlflow import MlflowClient

from mlops_template.cli.main import main
from mlops_template.scaffold.new import new_project

S3_ENVIRONMENT = """
[environments.s3test]
storage = "s3://{bucket}/iris"
tracking_uri = "sqlite:///mlruns.db"
s3_endpoint_url = "{endpoint}"
"""


def test_pipeline_runs_unchanged_on_s3_and_keeps_secrets_out_of_mlflow(tmp_path, s3_endpoint, s3_bucket):
    project = new_project("iris-s3", directory=tmp_path / "iris-s3", lock=False)
    with open(project / "mlops.toml", "a") as toml:
        toml.write(S3_ENVIRONMENT.format(bucket=s3_bucket, endpoint=s3_endpoint))

    result = CliRunner().invoke(main, ["run", "--project", str(project), "--environment", "s3test"])
    assert result.exit_code == 0, result.output

    s3 = boto3.client("s3", endpoint_url=s3_endpoint)
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket=s3_bucket)["Contents"]}
    client = MlflowClient(f"sqlite:///{project / 'mlruns.db'}")
    parent = next(
        r
        for r in client.search_runs([client.get_experiment_by_name("iris-s3").experiment_id])
        if "mlflow.parentRunId" not in r.data.tags
    )
    assert {
        "iris/datasets/processed.parquet",
        "iris/datasets/featurized.parquet",
        "iris/datasets/heldout.parquet",
        "iris/models/iris-s3/v1/MLmodel",
        f"iris/predictions/{parent.info.run_id}.parquet",
    } <= keys
    assert not (project / "data" / "datasets").exists()  # nothing went to the local folder
    body = s3.get_object(Bucket=s3_bucket, Key=f"iris/predictions/{parent.info.run_id}.parquet")["Body"].read()
    assert set(pd.read_parquet(io.BytesIO(body))["model_version"]) == {1}
    assert parent.data.tags["mlops.environment"] == "s3test"

    secret = os.environ["AWS_SECRET_ACCESS_KEY"]
    runs = client.search_runs([parent.info.experiment_id])
    recorded = [str(v) for r in runs for v in (*r.data.params.values(), *r.data.tags.values())]
    recorded += [i.dataset.source for r in runs for i in r.inputs.dataset_inputs]
    assert all(secret not in text for text in recorded)
    featurized = next(k for k in keys if k.startswith("iris/snapshots/featurized/") and k.endswith(".parquet"))
    assert any(f"s3://{s3_bucket}/{featurized}" in text for text in recorded)


def test_make_data_reads_raw_csv_files_instead_of_the_bundled_sample(tmp_path):
    project = new_project("raw-input", directory=tmp_path / "raw-input", lock=False)
    raw = pd.DataFrame(
        {
            "sepal_length": [5.1, 5.1, 6.2, 7.0],
            "sepal_width": [3.5, 3.5, 2.9, 3.2],
            "petal_length": [1.4, 1.4, 4.3, 4.7],
            "petal_width": [0.2, 0.2, 1.3, 1.4],
            "species": ["setosa", "setosa", None, "versicolor"],
        }
    )
    raw.to_csv(project / "data" / "raw" / "batch1.csv", index=False)

    result = CliRunner().invoke(main, ["run", "--project", str(project), "--step", "make_data"])
    assert result.exit_code == 0, result.output

    processed = pd.read_parquet(project / "data" / "datasets" / "processed.parquet")
    assert processed["species"].tolist() == ["setosa", "versicolor"]  # duplicate and missing target dropped
