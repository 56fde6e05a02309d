"""Lineage: each snapshot a step reads or writes is an MLflow dataset input of its run, tagged by id, and
the registered model version names the snapshot it was trained on, which loads back equal to the training data."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner
from conftest import TRAINED_NAME, project_client, store_client
from mlflow import MlflowClient

from mlops_template import Pipeline, StepContext, load_config
from mlops_template.cli.main import main
from mlops_template.data.snapshots import open_snapshots
from mlops_template.errors import IntegrityError, StepError
from mlops_template.pipeline.runner import run_pipeline

S3_ENVIRONMENT = """
[environments.s3test]
storage = "s3://{bucket}/p"
tracking_uri = "{tracking}"
s3_endpoint_url = "{endpoint}"
"""


@pytest.fixture(params=["local", "s3"])
def environment(request, tiny_project, shared_db) -> str:
    """The tiny project's environment: its local folder, or an S3 bucket on moto's server."""
    if request.param == "local":
        return "local"
    endpoint, bucket = request.getfixturevalue("s3_endpoint"), request.getfixturevalue("s3_bucket")
    with open(tiny_project / "mlops.toml", "a") as toml:
        toml.write(S3_ENVIRONMENT.format(bucket=bucket, tracking=shared_db, endpoint=endpoint))
    return "s3test"


def numbers(rows: int) -> pd.DataFrame:
    return pd.DataFrame({"x": range(rows), "y": [v * 2.5 for v in range(rows)]})


def make(ctx: StepContext) -> None:
    ctx.write("numbers", numbers(ctx.params["rows"]))


def use(ctx: StepContext) -> None:
    ctx.log_metrics({"rows": len(ctx.read("numbers"))})


def datasets(client: MlflowClient, run_id: str, context: str) -> list:
    run = client.get_run(run_id)
    return [
        i.dataset
        for i in run.inputs.dataset_inputs
        if {t.key: t.value for t in i.tags}.get("mlflow.data.context") == context
    ]


def source_uri(dataset) -> str:
    return json.loads(dataset.source)["uri"]


def test_written_and_read_snapshots_are_dataset_entries_and_tags_of_both_runs(tiny_project, shared_db, environment):
    config = load_config(tiny_project)
    result = run_pipeline(Pipeline([make, use]), config, environment=environment)
    make_run, use_run = (s.run_id for s in result.steps)

    store = open_snapshots(config, environment)
    [snapshot] = store.list("numbers")  # reading it did not store another version
    assert store.current("numbers") == snapshot
    assert (snapshot.run_id, snapshot.step) == (make_run, "make")
    uri = store.uri(snapshot)
    assert uri.endswith(f"snapshots/numbers/{snapshot.id}.parquet")
    assert uri.startswith("s3://" if environment == "s3test" else "/")

    client = store_client(shared_db)
    [written] = datasets(client, make_run, "output")
    [read] = datasets(client, use_run, "input")
    for dataset in (written, read):
        assert (dataset.name, dataset.digest, source_uri(dataset)) == ("numbers", snapshot.id, uri)
    assert datasets(client, make_run, "input") == [] and datasets(client, use_run, "output") == []
    for run_id in (make_run, use_run):
        assert client.get_run(run_id).data.tags["mlops.data.numbers"] == snapshot.id
    pd.testing.assert_frame_equal(store.read(snapshot.id)[1], numbers(4))


@pytest.mark.parametrize("ref", ["{id}", "numbers:{id}", "{prefix}", "numbers:{prefix}"])
def test_read_snapshot_reads_an_older_version_by_id_and_logs_that_id(tiny_project, shared_db, ref):
    config = load_config(tiny_project)
    old = run_pipeline(Pipeline([make]), config).steps[0]
    new = run_pipeline(Pipeline([make]), config, overrides={"rows": 6}).steps[0]
    store = open_snapshots(config)
    old_snapshot, new_snapshot = (next(s for s in store.list("numbers") if s.run_id == r.run_id) for r in (old, new))
    assert old_snapshot.id != new_snapshot.id and store.current("numbers") == new_snapshot

    seen = []

    def read_old(ctx: StepContext) -> None:
        seen.append(ctx.read_snapshot(ref.format(id=old_snapshot.id, prefix=old_snapshot.id[:6])))

    step = run_pipeline(Pipeline([read_old]), config).steps[0]
    pd.testing.assert_frame_equal(seen[0], numbers(4))
    client = store_client(shared_db)
    [read] = datasets(client, step.run_id, "input")
    assert (read.digest, source_uri(read)) == (old_snapshot.id, store.uri(old_snapshot))
    assert client.get_run(step.run_id).data.tags["mlops.data.numbers"] == old_snapshot.id
    assert store.current("numbers") == new_snapshot  # reading an old version does not make it current


def test_a_tampered_snapshot_fails_the_step_that_reads_it(tiny_project, shared_db):
    config = load_config(tiny_project)
    run_pipeline(Pipeline([make]), config)
    store = open_snapshots(config)
    [snapshot] = store.list("numbers")
    stored = Path(store.uri(snapshot))
    data = stored.read_bytes()
    stored.write_bytes(data[:-9] + bytes(b ^ 1 for b in data[-9:-8]) + data[-8:])  # one bit, same size

    def read_it(ctx: StepContext) -> None:
        ctx.read_snapshot(snapshot.id)

    with pytest.raises(StepError) as excinfo:
        run_pipeline(Pipeline([read_it]), config)
    assert isinstance(excinfo.value.__cause__, IntegrityError)
    assert str(excinfo.value).startswith(f"step 'read_it' failed: {stored}: its bytes no longer match snapshot ")
    assert snapshot.ref in str(excinfo.value)
    client = store_client(shared_db)
    failed = client.get_run(run_id_of(client, config.name, "read_it"))
    assert failed.info.status == "FAILED"
    assert failed.inputs.dataset_inputs == []  # nothing unverified was recorded as read


def run_id_of(client: MlflowClient, experiment: str, step: str) -> str:
    exp = client.get_experiment_by_name(experiment)
    [run] = client.search_runs([exp.experiment_id], f"tags.`mlops.step` = '{step}'")
    return run.info.run_id


@pytest.mark.parametrize(("how", "file"), [("library", "extra.csv"), ("cli", "extra.csv"), ("cli", "extra.parquet")])
def test_an_added_file_is_read_by_name_in_a_step(tiny_project, shared_db, tmp_path, how, file):
    frame = pd.DataFrame({"city": ["Oslo", "Lima", "Pune"], "temp": [3.5, 19.0, 27.25]})
    path = tmp_path / file
    frame.to_csv(path, index=False) if file.endswith(".csv") else frame.to_parquet(path, index=False)
    config = load_config(tiny_project)
    if how == "library":
        added = open_snapshots(config).add_file(path, "extra").snapshot
    else:
        result = CliRunner().invoke(main, ["data", "add", str(path), "--name", "extra", "--project", str(tiny_project)])
        assert result.exit_code == 0, result.output
        [added] = open_snapshots(config).list("extra")

    seen = []

    def consume(ctx: StepContext) -> None:
        seen.append(ctx.read("extra"))

    step = run_pipeline(Pipeline([consume]), config).steps[0]
    pd.testing.assert_frame_equal(seen[0], frame)
    [read] = datasets(store_client(shared_db), step.run_id, "input")
    store = open_snapshots(config)
    assert (read.name, read.digest, source_uri(read)) == ("extra", added.id, store.uri(added))
    assert source_uri(read).endswith(f"/snapshots/extra/{added.id}.{added.format}")
    assert store.list("extra") == [added]  # recognised as the added version, not stored again
    assert (added.run_id, added.source) == (None, str(path))


# -- the trained project --------------------------------------------------------------------------


def step_run(client: MlflowClient, step: str):
    """The newest run of `step` in the trained project's experiment."""
    exp = client.get_experiment_by_name(TRAINED_NAME)
    return client.search_runs(
        [exp.experiment_id], f"tags.`mlops.step` = '{step}'", order_by=["attributes.start_time DESC"]
    )[0]


def test_training_input_and_model_version_point_at_a_snapshot_equal_to_the_training_data(trained_project):
    project = trained_project.root
    featurized = pd.read_parquet(project / "data" / "datasets" / "featurized.parquet")
    client = project_client(project)
    train = step_run(client, "train_model")
    [featurized_input] = datasets(client, train.info.run_id, "input")
    [training] = datasets(client, train.info.run_id, "training")
    [heldout] = datasets(client, train.info.run_id, "heldout")
    version = client.get_model_version_by_alias(TRAINED_NAME, "champion")
    assert version.run_id == train.info.run_id
    assert version.tags["mlops.data.featurized"] == featurized_input.digest
    assert version.tags["mlops.training_data"] == f"train:{training.digest}"
    assert version.tags["mlops.heldout_data"] == f"heldout:{heldout.digest}"

    store = open_snapshots(load_config(project))
    snapshot, df = store.read(f"featurized:{featurized_input.digest}")
    assert (snapshot.id, store.uri(snapshot)) == (featurized_input.digest, source_uri(featurized_input))
    assert (snapshot.name, snapshot.step) == ("featurized", "feat_data")
    assert snapshot.run_id == step_run(client, "feat_data").info.run_id
    pd.testing.assert_frame_equal(df, featurized)
    # The training snapshot is exactly the rows the model learnt from: the split of featurized the gate left out of
    # the held-out rows, together making up the whole table.
    trained_on, train_df = store.read(version.tags["mlops.training_data"])
    assert (trained_on.id, store.uri(trained_on), trained_on.step) == (
        training.digest,
        source_uri(training),
        "train_model",
    )
    _, heldout_df = store.read(version.tags["mlops.heldout_data"])
    assert len(train_df) + len(heldout_df) == len(featurized)
    assert train_df.merge(heldout_df, on=list(featurized.columns)).empty
    assert {k: v for k, v in version.tags.items() if k.startswith("mlops.data.")} == {
        "mlops.data.featurized": featurized_input.digest,
        "mlops.data.train": training.digest,
        "mlops.data.heldout": heldout.digest,
    }


def test_the_raw_files_make_data_read_are_a_snapshot_logged_as_its_input(trained_copy):
    from sklearn.datasets import load_iris

    project = trained_copy
    iris = load_iris(as_frame=True)
    raw = iris.frame.rename(columns=lambda c: c.replace(" (cm)", "").replace(" ", "_"))
    raw["species"] = iris.target_names[raw.pop("target")]
    raw_files = [project / "data" / "raw" / "a.csv", project / "data" / "raw" / "b.csv"]
    raw.iloc[:75].to_csv(raw_files[0], index=False)
    raw.iloc[75:].to_csv(raw_files[1], index=False)
    result = CliRunner().invoke(main, ["run", "--project", str(project), "--step", "make_data"], catch_exceptions=False)
    assert result.exit_code == 0, result.output

    client = project_client(project)
    make_data = step_run(client, "make_data")
    [raw_input] = datasets(client, make_data.info.run_id, "input")
    assert raw_input.name == "raw"
    assert make_data.data.tags["mlops.data.raw"] == raw_input.digest

    store = open_snapshots(load_config(project))
    snapshot, df = store.read(f"raw:{raw_input.digest}")
    assert store.uri(snapshot) == source_uri(raw_input)
    assert (snapshot.run_id, snapshot.step, snapshot.rows) == (make_data.info.run_id, "make_data", 150)
    pd.testing.assert_frame_equal(df, pd.concat([pd.read_csv(f) for f in raw_files], ignore_index=True))
    assert not (project / "data" / "datasets" / "raw.parquet").exists()  # kept as a snapshot only
