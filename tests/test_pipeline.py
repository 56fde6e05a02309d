"""Pipelines and steps as validated objects, and the runner on a tiny pipeline of the test's own steps."""

from __future__ import annotations

import functools
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest
from conftest import store_client

from mlops_template import Pipeline, Step, StepContext, load_config
from mlops_template.data.hashing import content_id
from mlops_template.errors import StepError, StorageError
from mlops_template.pipeline.runner import run_pipeline


def make_data(ctx):
    pass


def feat_data(ctx):
    pass


def train_model(ctx):
    pass


def predict(ctx, extra=None):  # an optional second argument is fine
    pass


FOUR = [make_data, feat_data, train_model, predict]


# -- Pipeline and Step ------------------------------------------------------------------------


def test_names_are_the_functions_in_order():
    pipeline = Pipeline(FOUR)
    assert pipeline.names == ["make_data", "feat_data", "train_model", "predict"]
    assert [s.func for s in pipeline.steps] == FOUR


def test_repr_shows_the_order():
    assert repr(Pipeline([make_data, train_model])) == "Pipeline([make_data -> train_model])"


def test_step_with_its_own_name_keeps_it():
    pipeline = Pipeline([Step("load", make_data), train_model])
    assert pipeline.names == ["load", "train_model"]
    assert pipeline.steps[0].func is make_data


def test_duplicate_step_names_are_rejected_naming_the_step():
    with pytest.raises(StepError, match="two steps named 'feat_data'; rename one"):
        Pipeline([make_data, feat_data, Step("feat_data", train_model)])


def test_the_same_function_twice_is_rejected():
    with pytest.raises(StepError, match="'make_data'"):
        Pipeline([make_data, make_data])


def test_empty_pipeline_is_rejected():
    with pytest.raises(StepError, match="at least one step"):
        Pipeline([])


@pytest.mark.parametrize("item", ["make_data", 3, None])
def test_non_callable_is_rejected(item):
    with pytest.raises(StepError, match="is not callable; pass functions of one StepContext"):
        Pipeline([make_data, item])


def no_args():
    pass


def two_args(ctx, other):
    pass


def keyword_only(ctx, *, limit):
    pass


@pytest.mark.parametrize(
    ("func", "message"),
    [
        (no_args, "step 'no_args' must take exactly one argument (the StepContext, by position), it takes 0"),
        (
            two_args,
            "step 'two_args' must take exactly one argument (the StepContext, by position), it takes 2 (ctx, other)",
        ),
        (keyword_only, "step 'keyword_only' must take exactly one argument (the StepContext, by position), it takes 2"),
    ],
)
def test_functions_that_cannot_take_one_context_are_rejected(func, message):
    with pytest.raises(StepError) as excinfo:
        Pipeline([func])
    assert str(excinfo.value).startswith(message)


def test_a_partial_without_a_name_is_rejected_with_how_to_name_it():
    with pytest.raises(StepError, match=r"has no __name__.*Step\(name='...', func=...\)"):
        Pipeline([functools.partial(predict, extra=1)])
    assert Pipeline([Step("predict_v2", functools.partial(predict, extra=1))]).names == ["predict_v2"]


@pytest.mark.parametrize("names", [None, [], ()])
def test_select_nothing_means_all(names):
    assert [s.name for s in Pipeline(FOUR).select(names)] == ["make_data", "feat_data", "train_model", "predict"]


def test_select_keeps_pipeline_order():
    pipeline = Pipeline(FOUR)
    assert [s.name for s in pipeline.select(["predict", "make_data"])] == ["make_data", "predict"]
    assert [s.name for s in pipeline.select(["train_model", "feat_data", "train_model"])] == [
        "feat_data",
        "train_model",
    ]


def test_select_one_name_as_a_string():
    assert [s.name for s in Pipeline(FOUR).select("train_model")] == ["train_model"]


def test_unknown_step_suggests_the_near_miss():
    with pytest.raises(StepError) as excinfo:
        Pipeline(FOUR).select(["make_data", "trian_model"])
    assert str(excinfo.value) == (
        "unknown step 'trian_model'; did you mean 'train_model'? Valid: feat_data, make_data, predict, train_model"
    )


def test_unknown_step_without_near_miss_lists_valid_ones():
    with pytest.raises(StepError, match="unknown step 'xyz'; valid: feat_data, make_data, predict, train_model"):
        Pipeline(FOUR).select(["xyz"])


# -- the runner on a tiny pipeline ----------------------------------------------------------


@pytest.fixture
def tiny_project(tiny_project):
    """The shared tiny project, with shared params and a param of the `use` step."""
    with open(tiny_project / "mlops.toml", "a", encoding="utf-8") as toml:
        toml.write('\n[params]\ntarget = "y"\n\n[steps.use.params]\nscale = 2.5\n')
    return tiny_project


def pipeline_runs(tracking_uri: str, experiment: str):
    client = store_client(tracking_uri)
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id], order_by=["attributes.start_time ASC"]) if exp else []
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    return parents, children


def dataset_inputs(run, context: str):
    return [
        i.dataset
        for i in run.inputs.dataset_inputs
        if {t.key: t.value for t in i.tags}.get("mlflow.data.context") == context
    ]


def make(ctx: StepContext) -> None:
    rows = ctx.params["rows"]
    ctx.write("numbers", pd.DataFrame({"x": range(rows), ctx.params["target"]: [v * 2 for v in range(rows)]}))


def use(ctx: StepContext) -> None:
    df = ctx.read("numbers")
    ctx.log_metrics({"total": float(df["y"].sum()) * ctx.params["scale"]})


def test_runner_logs_a_parent_and_a_child_per_step_with_params_data_and_metrics(tiny_project, shared_db):
    config = load_config(tiny_project)
    result = run_pipeline(Pipeline([make, use]), config, steps=None)

    assert result.ok and [s.name for s in result.steps] == ["make", "use"]
    parents, children = pipeline_runs(shared_db, config.name)
    assert [p.info.run_id for p in parents] == [result.run_id]
    parent = parents[0]
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["mlops.steps"] == "make,use"
    assert parent.data.tags["mlops.environment"] == "local"
    assert [c.data.tags["mlops.step"] for c in children] == ["make", "use"]
    assert parent.info.run_name == f"{config.name} {result.key}"  # not one of MLflow's random names
    assert [c.info.run_name for c in children] == ["make", "use"]
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {result.run_id}
    assert [c.info.status for c in children] == ["FINISHED", "FINISHED"]
    make_run, use_run = children

    # Shared [params] and each step's own params, as the step saw them.
    assert make_run.data.params == {"target": "y", "rows": "4"}
    assert use_run.data.params == {"target": "y", "scale": "2.5"}
    assert use_run.data.metrics == {"total": (0 + 2 + 4 + 6) * 2.5}

    stored = tiny_project.parent / "storage" / "datasets" / "numbers.parquet"
    digest = content_id(stored.read_bytes())
    [written] = dataset_inputs(make_run, "output")
    [read] = dataset_inputs(use_run, "input")
    for dataset in (written, read):
        assert dataset.name == "numbers"
        assert dataset.digest == digest
        assert str(stored.parent.parent / "snapshots" / "numbers" / f"{digest}.parquet") in dataset.source
    assert make_run.data.tags["mlops.data.numbers"] == digest
    assert use_run.data.tags["mlops.data.numbers"] == digest
    assert pd.read_parquet(stored).to_dict("list") == {"x": [0, 1, 2, 3], "y": [0, 2, 4, 6]}


def test_runner_runs_only_the_selected_step(tiny_project, shared_db):
    config = load_config(tiny_project)
    run_pipeline(Pipeline([make, use]), config, steps=None)
    result = run_pipeline(Pipeline([make, use]), config, steps=["use"])
    parents, children = pipeline_runs(shared_db, config.name)
    assert parents[-1].info.run_id == result.run_id
    assert parents[-1].data.tags["mlops.steps"] == "use"
    assert [c.data.tags["mlops.step"] for c in children if c.data.tags["mlflow.parentRunId"] == result.run_id] == [
        "use"
    ]


def test_unknown_step_fails_before_any_run(tiny_project, shared_db):
    config = load_config(tiny_project)
    with pytest.raises(StepError, match="unknown step 'mak'; did you mean 'make'?"):
        run_pipeline(Pipeline([make, use]), config, steps=["mak"])
    assert pipeline_runs(shared_db, config.name) == ([], [])


def test_failing_step_fails_its_run_and_the_parent_and_stops_the_pipeline(tiny_project, shared_db):
    ran = []

    def first(ctx):
        ran.append("first")

    def explode(ctx):
        raise RuntimeError("boom")

    def later(ctx):
        ran.append("later")

    config = load_config(tiny_project)
    with pytest.raises(StepError) as excinfo:
        run_pipeline(Pipeline([first, explode, later]), config, steps=None)

    message = str(excinfo.value)
    assert message.startswith("step 'explode' failed: RuntimeError: boom (full log: ")
    log = Path(message.split("(full log: ")[1].rstrip(")"))
    assert log.is_file() and log.is_relative_to(tiny_project / ".mlops" / "logs")
    assert "Traceback" in log.read_text() and 'raise RuntimeError("boom")' in log.read_text()
    assert "Traceback" not in message
    assert ran == ["first"]

    parents, children = pipeline_runs(shared_db, config.name)
    assert [p.info.status for p in parents] == ["FAILED"]
    assert [(c.data.tags["mlops.step"], c.info.status) for c in children] == [
        ("first", "FINISHED"),
        ("explode", "FAILED"),
    ]
    client = store_client(shared_db)
    assert "explode.error.log" in [a.path for a in client.list_artifacts(children[1].info.run_id)]


@pytest.mark.parametrize("name", ["../x", "../../escape", "/abs", "a/b", ".hidden"])
def test_invalid_dataset_name_fails_the_step_and_writes_nothing(tiny_project, shared_db, name):
    def sneaky(ctx):
        ctx.write(name, pd.DataFrame({"x": [1]}))

    config = load_config(tiny_project)
    with pytest.raises(StepError) as excinfo:
        run_pipeline(Pipeline([sneaky]), config, steps=None)
    assert str(excinfo.value).startswith(f"step 'sneaky' failed: dataset name {name!r} is invalid; use letters")
    assert isinstance(excinfo.value.__cause__, StorageError)

    base = tiny_project.parent
    assert not Path("/abs.parquet").exists()
    parents, children = pipeline_runs(shared_db, config.name)
    # Nothing but the config, the failed step's traceback and the pipeline run's record, anywhere near.
    log = tiny_project / ".mlops" / "logs" / f"{parents[0].info.run_id}-sneaky.log"
    record = base / "storage" / "pipeline-runs" / f"{parents[0].data.tags['mlops.pipeline_run']}.json"
    assert sorted(p for p in base.rglob("*") if p.is_file()) == sorted([log, record, tiny_project / "mlops.toml"])
    assert [p.info.status for p in parents] == ["FAILED"]
    assert [c.info.status for c in children] == ["FAILED"]


def _train_tiny(ctx: StepContext):
    from sklearn.tree import DecisionTreeClassifier

    df = pd.DataFrame({"a": [0.0, 1.0, 2.0, 3.0] * 3, "b": [1.0, 0.0, 1.0, 0.0] * 3, "y": [0, 1, 0, 1] * 3})
    df["a"] += range(12)  # distinct rows
    train, heldout = df.iloc[:8], df.iloc[8:]
    model = DecisionTreeClassifier(random_state=0).fit(train[["a", "b"]], train["y"])
    return ctx.propose_model(model, train=train, heldout=heldout, target="y")


def test_model_of_a_step_that_fails_after_the_gate_is_not_registered(tiny_project, shared_db):
    def train_then_fail(ctx):
        assert _train_tiny(ctx).passed
        raise RuntimeError("evaluation report failed")

    config = load_config(tiny_project)
    with pytest.raises(StepError, match="evaluation report failed"):
        run_pipeline(Pipeline([train_then_fail]), config)

    client = store_client(shared_db)
    assert client.search_model_versions(f"name='{config.model.name}'") == []
    _, children = pipeline_runs(shared_db, config.name)
    assert children[0].data.tags["mlops.gate"] == "failed"
    assert "the step failed after the gate passed" in children[0].data.tags["mlops.gate_reason"]
    assert not (tiny_project.parent / "storage" / "models").exists()


def test_failed_export_unregisters_the_version_and_keeps_the_old_champion(tiny_project, shared_db, monkeypatch):
    from mlops_template.storage import LocalStorage

    config = load_config(tiny_project)
    run_pipeline(Pipeline([_train_tiny]), config)
    client = store_client(shared_db)
    assert str(client.get_model_version_by_alias(config.model.name, "champion").version) == "1"

    def full_disk(self, local_dir, prefix):  # fault injection: the storage refuses the export
        raise StorageError(f"{prefix}: no space left")

    monkeypatch.setattr(LocalStorage, "upload_dir", full_disk)
    with pytest.raises(StepError, match="no space left"):
        run_pipeline(
            Pipeline([_train_tiny]),
            replace(config, model=replace(config.model, gate=replace(config.model.gate, beat_champion=False))),
        )

    assert [str(v.version) for v in client.search_model_versions(f"name='{config.model.name}'")] == ["1"]
    assert str(client.get_model_version_by_alias(config.model.name, "champion").version) == "1"


def test_reading_a_dataset_no_step_wrote_says_which_and_what_to_run(tiny_project, shared_db):
    def needs_missing(ctx):
        ctx.read("never_written")

    config = load_config(tiny_project)
    with pytest.raises(StepError) as excinfo:
        run_pipeline(Pipeline([needs_missing]), config)
    assert "dataset 'never_written' does not exist at " in str(excinfo.value)
    assert "run the step that writes it first" in str(excinfo.value)
