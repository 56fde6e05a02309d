"""The rendered project's train_model and predict on Dask and on pandas, and predictions stored as parts.

A rendered project gets four raw CSV files of a synthetic classification table
(classes a, b, c in rows 600 : 300 : 100) and runs the whole pipeline through
`mlops run` with `max_train_rows` below its 1,000 rows: with `MLOPS_ENGINE=dask`
(a LocalCluster in this process) train_model trains on a stratified sample and
predict scores the featurized table on the workers, writing parts; with pandas
the same sample is taken and predictions are one file. `ctx.write_predictions`
and `read_predictions` are also checked directly, a worker's failure included.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from conftest import copy_project, project_client

from mlops_template import Pipeline, StepContext, load_config, open_snapshots, read_predictions
from mlops_template.cli.main import main
from mlops_template.data import engines
from mlops_template.data.hashing import short_id
from mlops_template.errors import DataError, StorageError
from mlops_template.pipeline.runner import run_pipeline
from mlops_template.scaffold.new import new_project

pytestmark = pytest.mark.xdist_group("dask")  # a LocalCluster per test process is plenty

NAME = "engines-tp"
TARGET = "label"
CLASSES = {"a": 600, "b": 300, "c": 100}
ROWS = sum(CLASSES.values())
LIMIT = 400
SAMPLED = {"a": 240, "b": 120, "c": 40}  # every class in proportion: 40 % of each
HELD_OUT = 0.3
_VARIABLES = ("MLOPS_ENGINE", "MLOPS_DASK_SCHEDULER", "MLOPS_ENVIRONMENT", "MLOPS_STORAGE", "MLFLOW_TRACKING_URI")
_VARIABLES += ("MLFLOW_REGISTRY_URI", "MLFLOW_RUN_ID")


def synthetic_table(seed: int = 3) -> pd.DataFrame:
    """Classes separable by `x` (so the gate's f1 floor passes), with a noise column and a text column."""
    rng = np.random.default_rng(seed)
    bounds = {"a": (0.0, 6.0), "b": (6.0, 9.0), "c": (9.0, 10.0)}
    parts = [
        pd.DataFrame({"x": rng.uniform(*bounds[label], n).round(6), TARGET: label}) for label, n in CLASSES.items()
    ]
    df = pd.concat(parts, ignore_index=True).sample(frac=1.0, random_state=seed).reset_index(drop=True)
    df.insert(1, "noise", rng.normal(0.0, 1.0, ROWS).round(6))
    df.insert(2, "colour", rng.choice(["red", "green", "blue"], ROWS))
    return df


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The rendered project with the synthetic table as four raw CSV files."""
    with pytest.MonkeyPatch.context() as mp:
        for var in _VARIABLES:
            mp.delenv(var, raising=False)
        root = new_project(NAME, directory=tmp_path_factory.mktemp("rendered") / NAME, lock=False)
    raw = root / "data" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    table, files = synthetic_table(), 4
    for i in range(files):
        table.iloc[i * ROWS // files : (i + 1) * ROWS // files].to_csv(raw / f"part-{i}.csv", index=False)
    return root


@pytest.fixture
def project(rendered: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for var in _VARIABLES:
        monkeypatch.delenv(var, raising=False)
    return copy_project(rendered, tmp_path / NAME)


@pytest.fixture(autouse=True)
def _close_clients() -> Iterator[None]:
    yield
    engines.close_clients()


def run_cli(project: Path, *args: str) -> str:
    result = CliRunner().invoke(main, ["run", "--project", str(project), *args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def run_whole_pipeline(project: Path) -> str:
    return run_cli(project, "-P", f"target={TARGET}", "-P", f"max_train_rows={LIMIT}", "-P", "dataset=featurized")


def latest(project: Path, step: str):
    client = project_client(project)
    experiment = client.get_experiment_by_name(NAME)
    found = f"tags.`mlops.step` = '{step}'"
    return client.search_runs([experiment.experiment_id], found, order_by=["attributes.start_time DESC"])[0]


def sampled_classes(project: Path, train_run) -> dict[str, int]:
    """Rows per class of the train and held-out snapshots train_model stored: the sample it took."""
    store = open_snapshots(load_config(project), "local")
    tags = train_run.data.tags
    rows = [store.read(f"{name}:{tags[f'mlops.output.{name}']}")[1] for name in ("train", "heldout")]
    return pd.concat(rows)[TARGET].value_counts().to_dict()


def check_training_on_a_sample(project: Path, output: str) -> None:
    train = latest(project, "train_model")
    metrics = train.data.metrics
    assert metrics["rows_available"] == ROWS
    assert metrics["rows_sampled"] == LIMIT
    assert metrics["rows_trained_on"] == LIMIT - round(LIMIT * HELD_OUT)
    assert train.data.params["max_train_rows"] == str(LIMIT)
    assert sampled_classes(project, train) == SAMPLED
    assert f"training on a stratified sample of {LIMIT} of {ROWS} rows (max_train_rows = {LIMIT})" in output
    assert train.data.tags["mlops.gate"] == "passed"
    client = project_client(project)
    assert len(client.search_model_versions(f"name = '{NAME}'")) == 1
    assert client.get_model_version_by_alias(NAME, "champion").run_id == train.info.run_id


def featurized(project: Path) -> pd.DataFrame:
    return open_snapshots(load_config(project), "local").read("featurized")[1]


def stored_parts(project: Path, run_id: str) -> tuple[list[str], dict]:
    folder = project / "data" / "predictions" / run_id
    manifest = json.loads((folder / "_manifest.json").read_text())
    return sorted(p.name for p in folder.glob("part-*.parquet")), manifest


def test_dask_trains_on_a_stratified_sample_and_predict_writes_parts(project, monkeypatch):
    monkeypatch.setenv("MLOPS_ENGINE", "dask")
    output = run_whole_pipeline(project)

    check_training_on_a_sample(project, output)
    predict = latest(project, "predict")
    run_id = predict.data.tags["mlflow.parentRunId"]
    assert not (project / "data" / "predictions" / f"{run_id}.parquet").exists()
    files, manifest = stored_parts(project, run_id)
    assert files == [part["file"] for part in manifest["parts"]] and manifest["rows"] == ROWS
    scored = read_predictions(load_config(project), run_id)
    assert len(scored) == ROWS and set(scored["model_version"]) == {1}
    assert (scored["prediction"] == scored[TARGET]).mean() > 0.9
    [logged] = [i for i in predict.inputs.dataset_inputs if i.dataset.name == "predictions"]
    assert str(project / "data" / "predictions" / run_id) in logged.dataset.source
    assert logged.dataset.digest == short_id(manifest["digest"])
    assert json.loads(logged.dataset.profile)["num_rows"] == ROWS


def test_predict_scores_a_partitioned_table_part_by_part_on_the_workers(project, monkeypatch):
    import dask.dataframe as dd

    monkeypatch.setenv("MLOPS_ENGINE", "dask")
    run_whole_pipeline(project)
    table = featurized(project)
    store = open_snapshots(load_config(project), "local")
    engines.dask_client(load_config(project).environment("local"))
    stored = store.write_dask("featurized", dd.from_pandas(table, npartitions=4, sort=False))
    assert stored.snapshot.partitioned and len(stored.snapshot.partitions) == 4

    output = run_cli(project, "--step", "predict", "-P", "dataset=featurized")

    predict = latest(project, "predict")
    run_id = predict.data.tags["mlflow.parentRunId"]
    assert predict.data.tags["mlops.data.featurized"] == stored.snapshot.id
    files, manifest = stored_parts(project, run_id)
    assert files == [f"part-{i:05d}.parquet" for i in range(4)]
    assert [part["rows"] for part in manifest["parts"]] == [part["rows"] for part in stored.snapshot.partitions]
    assert f"{ROWS} predictions → " in output and "(4 parts)" in output
    scored = read_predictions(load_config(project), run_id)
    pd.testing.assert_frame_equal(scored[table.columns.tolist()], table)
    assert set(scored["model_version"]) == {1}
    # The workers' predictions are the champion's on the whole table, scored here in one piece.
    from mlops_template.models.registry import load_champion

    champion = load_champion(project_client(project), NAME)
    assert scored["prediction"].tolist() == list(champion.predict(table))
    lazily = read_predictions(load_config(project), run_id, engine="dask")
    assert lazily.npartitions == 4 and len(lazily) == ROWS


def test_pandas_takes_the_same_sample_and_predict_writes_one_file(project, monkeypatch):
    monkeypatch.setenv("MLOPS_ENGINE", "pandas")
    output = run_whole_pipeline(project)

    check_training_on_a_sample(project, output)
    run_id = latest(project, "predict").data.tags["mlflow.parentRunId"]
    single = project / "data" / "predictions" / f"{run_id}.parquet"
    assert single.is_file() and not (project / "data" / "predictions" / run_id).exists()
    scored = read_predictions(load_config(project), run_id)
    pd.testing.assert_frame_equal(scored, pd.read_parquet(single))
    assert len(scored) == ROWS and set(scored["model_version"]) == {1}


def test_without_a_cap_every_row_is_trained_on(project, monkeypatch):
    monkeypatch.setenv("MLOPS_ENGINE", "dask")
    output = run_cli(project, "-P", f"target={TARGET}", "--step", "make_data", "--step", "feat_data")
    output += run_cli(project, "-P", f"target={TARGET}", "--step", "train_model")
    metrics = latest(project, "train_model").data.metrics
    assert metrics["rows_available"] == metrics["rows_sampled"] == ROWS
    assert f"training on all {ROWS} rows (max_train_rows = 1000000)" in output


# -- write_predictions and read_predictions, directly ----------------------------------------------

SCORED = pd.DataFrame({"x": [float(i) for i in range(12)], "prediction": list("abc" * 4), "model_version": 2})
outcomes: dict[str, object] = {}


def fail_on_third(part: pd.DataFrame, partition_info=None) -> pd.DataFrame:
    if partition_info and partition_info["number"] == 2:
        raise RuntimeError("scoring failed on this partition")
    return part


def write_both_ways(ctx: StepContext) -> None:
    import dask.dataframe as dd

    ddf = dd.from_pandas(SCORED, npartitions=3, sort=False)
    outcomes["file"] = ctx.write_predictions(SCORED)
    try:
        ctx.write_predictions(ddf.map_partitions(fail_on_third, meta=ddf._meta))
    except DataError as exc:
        outcomes["failed"] = str(exc)
    outcomes["after_failure"] = sorted(ctx.storage.list("predictions"))
    outcomes["parts"] = ctx.write_predictions(ddf)


def test_parts_replace_the_file_and_a_failed_write_stores_nothing(tiny_project):
    config = load_config(tiny_project)
    result = run_pipeline(Pipeline([write_both_ways]), config)
    run_id = result.run_id
    storage = tiny_project.parent / "storage"

    assert str(outcomes["failed"]).startswith(f"writing the predictions of pipeline run '{run_id}' on the Dask workers")
    assert "scoring failed on this partition" in str(outcomes["failed"])
    assert outcomes["after_failure"] == [f"predictions/{run_id}.parquet"]  # the file kept, no part, no staging
    assert outcomes["parts"] == str(storage / "predictions" / run_id)
    assert sorted(p.name for p in (storage / "predictions").iterdir()) == [run_id]  # the file replaced
    assert sorted(p.name for p in (storage / "predictions" / run_id).iterdir()) == [
        "_manifest.json",
        *(f"part-{i:05d}.parquet" for i in range(3)),
    ]
    pd.testing.assert_frame_equal(read_predictions(config, run_id), SCORED, check_dtype=False)  # Dask's str dtype

    (storage / "predictions" / run_id / "part-00001.parquet").write_bytes(
        (storage / "predictions" / run_id / "part-00000.parquet").read_bytes()
    )
    with pytest.raises(Exception, match="no longer match the digest"):
        read_predictions(config, run_id)
    (storage / "predictions" / run_id / "_manifest.json").unlink()
    with pytest.raises(StorageError, match=f"the predictions of pipeline run '{run_id}' at .* are incomplete"):
        read_predictions(config, run_id)


def test_a_run_without_predictions_names_both_layouts(tiny_project):
    config = load_config(tiny_project)
    result = run_pipeline(Pipeline([no_predictions]), config)
    with pytest.raises(StorageError) as excinfo:
        read_predictions(config, result.run_id)
    message = str(excinfo.value)
    assert message.startswith(f"pipeline run '{result.run_id}' stored no predictions in environment 'local' (neither ")
    assert f"predictions/{result.run_id}/ nor " in message and f"predictions/{result.run_id}.parquet)" in message


def no_predictions(ctx: StepContext) -> None:
    ctx.log_metrics({"rows": 0})


# -- the template's predict on Dask: one copy of the model in the graph ----------------------------


class Model:
    """A stand-in champion: predicts `x > 5`, and counts nothing but its version."""

    version = "7"

    def predict(self, df: pd.DataFrame):
        return (df["x"] > 5).to_numpy()


def test_the_template_predict_puts_the_model_in_the_graph_once(rendered, monkeypatch):
    import dask.dataframe as dd

    monkeypatch.syspath_prepend(str(rendered / "src"))
    from engines_tp.models.predict import predict

    table = pd.DataFrame({"x": [float(i) for i in range(16)]})
    champion, written = Model(), []
    ctx = type("Ctx", (), {})()
    ctx.engine, ctx.params = "dask", {"dataset": "scored_table"}
    ctx.load_champion = lambda: champion
    ctx.read = lambda name, engine: dd.from_pandas(table, npartitions=4, sort=False)
    ctx.write_predictions = written.append

    predict(ctx)

    [scored] = written
    graph = dict(scored.__dask_graph__())
    holding = [key for key, task in graph.items() if getattr(task, "value", None) is champion]
    assert len(holding) == 1  # one key; every partition's task depends on it rather than carrying a copy
    scoring = [task for key, task in graph.items() if key[0].startswith("score-")]
    assert len(scoring) == 4 and all(holding[0] in task.dependencies for task in scoring)
    expected = table.assign(prediction=table["x"] > 5, model_version=7)
    pd.testing.assert_frame_equal(scored.compute(scheduler="sync"), expected)
