"""Any model library through `propose_model`, a gate that compares like with like, and a champion that moves safely."""

from __future__ import annotations

import json
import threading
from dataclasses import replace
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from conftest import store_client
from mlflow import MlflowClient

from mlops_template import Pipeline, StepContext, load_config
from mlops_template.errors import ModelError, StepError, TrackingError
from mlops_template.models import registry as registry_module
from mlops_template.pipeline.runner import run_pipeline


def table(n: int = 200, *, seed: int = 0, text: bool = False) -> pd.DataFrame:
    """Rows whose label is `x > 0`: a perfect rule exists, so every decent model scores well."""
    rng = np.random.default_rng(seed)
    df = pd.DataFrame({"x": rng.uniform(-1, 1, n), "z": rng.normal(size=n)})
    df["label"] = (df["x"] > 0).astype(int)
    if text:
        df["plan"] = np.where(df["label"] == 1, "pro", rng.choice(["basic", "free"], n)).astype(object)
        df.loc[::9, "plan"] = None
        df.loc[::11, "x"] = np.nan
    return df


def configured(tiny_project, *, beat_champion: bool = True, min: float | None = None, allow_pickle: bool = True):
    """The tiny project's config with this gate; pyfunc models (the rules below) need allow_pickle."""
    config = load_config(tiny_project)
    gate = replace(config.model.gate, beat_champion=beat_champion, min=min)
    return replace(config, model=replace(config.model, gate=gate, allow_pickle=allow_pickle))


def client_of(config) -> MlflowClient:
    return store_client(config.environment().tracking_uri)


def champion_version(config) -> str:
    return str(client_of(config).get_model_version_by_alias(config.model.name, "champion").version)


def versions(config) -> list[str]:
    return sorted(str(v.version) for v in client_of(config).search_model_versions(f"name='{config.model.name}'"))


def train_step(make_model, data: pd.DataFrame, *, split: int = 140, **propose):
    """A step that fits `make_model()` on the first `split` rows and proposes it, holding out the rest."""
    decisions = []

    def train_model(ctx: StepContext) -> None:
        train, heldout = data.iloc[:split], data.iloc[split:]
        model = make_model()
        if hasattr(model, "fit"):
            model.fit(train.drop(columns="label"), train["label"])
        decisions.append(ctx.propose_model(model, train=train, heldout=heldout, target="label", **propose))

    return train_model, decisions


# -- any model library ------------------------------------------------------------------------


def sklearn_pipeline():
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline as SkPipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    numeric = SkPipeline([("impute", SimpleImputer()), ("scale", StandardScaler())])
    prepare = ColumnTransformer(
        [("num", numeric, ["x", "z"]), ("cat", OneHotEncoder(handle_unknown="ignore"), ["plan"])]
    )
    return SkPipeline([("prepare", prepare), ("model", LogisticRegression())])


def hist_gradient_boosting():
    from sklearn.ensemble import HistGradientBoostingClassifier

    return HistGradientBoostingClassifier(max_iter=20, random_state=0)


def lightgbm_model():
    import lightgbm

    return lightgbm.LGBMClassifier(n_estimators=20, min_child_samples=5, verbose=-1, random_state=0)


def xgboost_model():
    import xgboost

    return xgboost.XGBClassifier(n_estimators=20, max_depth=3, random_state=0)


class SignRule(mlflow.pyfunc.PythonModel):
    """A custom model: no library, just a rule, logged through the pyfunc flavour."""

    def __init__(self, threshold: float = 0.0) -> None:
        self.threshold = threshold

    def predict(self, context, model_input, params=None):
        return (model_input["x"] > self.threshold).astype(int).to_numpy()


@pytest.mark.parametrize(
    ("make_model", "text"),
    [
        (sklearn_pipeline, True),
        (hist_gradient_boosting, False),
        (lightgbm_model, False),
        (xgboost_model, False),
        (SignRule, False),
    ],
    ids=["sklearn-pipeline", "hist-gradient-boosting", "lightgbm", "xgboost", "pyfunc"],
)
def test_each_model_kind_trains_registers_promotes_loads_and_predicts(tiny_project, make_model, text):
    data = table(text=text)
    config = configured(tiny_project, beat_champion=False)
    first, decisions = train_step(make_model, data)
    run_pipeline(Pipeline([first]), config)
    assert decisions[0].passed and decisions[0].value > 0.8
    second, _ = train_step(make_model, table(seed=1, text=text))
    run_pipeline(Pipeline([second]), config)
    assert (versions(config), champion_version(config)) == (["1", "2"], "2")

    registry_module.promote(client_of(config), config.model.name, "1")  # roll back by hand
    predicted = []

    def predict(ctx: StepContext) -> None:
        champion = ctx.load_champion()
        predicted.append((champion.version, champion.predict(data.iloc[140:])))

    run_pipeline(Pipeline([predict]), config)
    [(version, labels)] = predicted
    assert version == "1"
    assert (np.asarray(labels).astype(int) == data["label"].iloc[140:].to_numpy()).mean() > 0.8


def test_one_process_loads_a_version_once_but_verifies_its_files_every_time(tiny_project, monkeypatch):
    from urllib.parse import urlparse

    from mlops_template.errors import IntegrityError

    config = configured(tiny_project, beat_champion=False)
    trained = []
    step, _ = train_step(lambda: trained.append(hist_gradient_boosting()) or trained[-1], table())
    loads = []
    real_load = registry_module.load_folder
    monkeypatch.setattr(
        registry_module, "load_folder", lambda path, *a, **k: loads.append(path) or real_load(path, *a, **k)
    )
    loaded = []

    def predict(ctx: StepContext) -> None:
        loaded.extend([ctx.load_champion().model, ctx.load_champion().model])

    run_pipeline(Pipeline([step, predict]), config)  # the model just registered is predict's, not loaded back
    assert loads == [] and len(loaded) == 2 and all(model is trained[0] for model in loaded)

    monkeypatch.setattr(registry_module, "_loaded", {})  # as in a process of its own
    loaded.clear()
    run_pipeline(Pipeline([predict]), config)
    assert len(loads) == 1 and loaded[0] is loaded[1] and loaded[0] is not trained[0]

    version = client_of(config).get_model_version_by_alias(config.model.name, "champion")
    stored = Path(urlparse(client_of(config).get_model_version_download_uri(version.name, version.version)).path)
    (stored / "MLmodel").write_text((stored / "MLmodel").read_text() + "\n# changed\n")
    with pytest.raises(StepError, match="files do not match the sha256 recorded at registration") as raised:
        run_pipeline(Pipeline([predict]), config)
    assert isinstance(raised.value.__cause__, IntegrityError) and len(loads) == 1


def test_a_model_no_flavour_knows_is_refused_with_the_way_out(tiny_project):
    class Opaque:
        def predict(self, X):
            return np.zeros(len(X), dtype=int)

    step, _ = train_step(Opaque, table())
    with pytest.raises(StepError, match=r"cannot log a .*Opaque: .* pass log_model=lambda name:"):
        run_pipeline(Pipeline([step]), configured(tiny_project))
    assert versions(configured(tiny_project)) == []


def test_a_log_model_callable_logs_anything_and_what_it_logged_is_scored(tiny_project):
    def log_rule(name):
        return mlflow.pyfunc.log_model(name=name, python_model=SignRule(), pip_requirements=["mlflow"])

    step, decisions = train_step(lambda: None, table(), log_model=log_rule)
    config = configured(tiny_project)
    run_pipeline(Pipeline([step]), config)
    assert decisions[0].passed and decisions[0].value == 1.0  # the rule is perfect on these rows
    assert champion_version(config) == "1"


def test_skops_trusts_only_scikit_learn_numpy_and_scipy_types():
    from sklearn.preprocessing import FunctionTransformer

    from mlops_template.models.flavors import trusted_types

    assert "sklearn.tree._tree.Tree" in trusted_types(
        __import__("sklearn.tree", fromlist=["DecisionTreeClassifier"]).DecisionTreeClassifier().fit([[0], [1]], [0, 1])
    )
    custom = FunctionTransformer(_double).fit([[1.0]])
    with pytest.raises(
        ModelError, match=r"types skops will not load without trusting their code: .*test_models\._double"
    ):
        trusted_types(custom)


def _double(x):
    return x * 2


# -- a fair gate ------------------------------------------------------------------------------


class Threshold(mlflow.pyfunc.PythonModel):
    def __init__(self, threshold: float) -> None:
        self.threshold = threshold

    def predict(self, context, model_input, params=None):
        return (model_input["x"] > self.threshold).astype(int).to_numpy()


def test_better_on_its_own_split_but_worse_on_the_same_rows_is_refused(tiny_project):
    config = configured(tiny_project)
    data = table(300)
    # The champion is the perfect rule, but its own held-out rows have their labels flipped:
    # the f1 logged on its run is 0, which any candidate "beats" when compared with logged numbers.
    flipped = data.iloc[:200].assign(label=lambda d: 1 - d["label"])
    champion_data = pd.concat([data.iloc[200:], flipped.iloc[:100]], ignore_index=True)
    first, decisions = train_step(lambda: Threshold(0.0), champion_data, split=100)
    run_pipeline(Pipeline([first]), config)
    assert decisions[0].passed and decisions[0].value == 0.0
    # The candidate is a worse rule, scored on its own clean split: 0.8-0.95, far above the champion's logged 0.
    candidate_data = pd.concat([data.iloc[200:230], data.iloc[100:200]], ignore_index=True)
    second, decisions = train_step(lambda: Threshold(0.3), candidate_data, split=30)
    run_pipeline(Pipeline([second]), config)

    decision = decisions[0]
    assert not decision.passed
    assert 0.6 < decision.value < 1.0 and decision.champion_value == 1.0
    assert decision.reason == (
        f"f1={decision.candidate_value:.4g} does not beat champion v1 (1) "
        "on the 100 held-out rows neither model trained on"
    )
    assert versions(config) == ["1"]


def test_rows_the_champion_trained_on_are_left_out_of_the_comparison(tiny_project):
    config = configured(tiny_project)
    data = table(300)
    first, _ = train_step(lambda: Threshold(0.2), data.iloc[:200], split=150)
    run_pipeline(Pipeline([first]), config)
    # 40 of the candidate's 100 held-out rows are rows the champion trained on.
    candidate_data = pd.concat([data.iloc[200:250], data.iloc[:40], data.iloc[240:300]], ignore_index=True)
    second, decisions = train_step(lambda: Threshold(0.0), candidate_data, split=50)
    run_pipeline(Pipeline([second]), config)
    decision = decisions[0]
    assert decision.rows == 100
    assert "on the 60 held-out rows neither model trained on" in decision.reason
    assert decision.passed and decision.candidate_value == 1.0 > decision.champion_value


def test_a_champion_that_cannot_score_the_rows_refuses_the_candidate(tiny_project):
    config = configured(tiny_project, min=0.8)
    data = table()
    first, _ = train_step(hist_gradient_boosting, data)
    run_pipeline(Pipeline([first]), config)
    renamed = data.rename(columns={"z": "noise"})
    second, decisions = train_step(hist_gradient_boosting, renamed)
    run_pipeline(Pipeline([second]), config)
    assert not decisions[0].passed
    assert "champion v1 cannot score them (it needs column(s) these rows lack" in decisions[0].reason
    assert "the candidate is refused" in decisions[0].reason
    assert champion_version(config) == "1"
    assert len(client_of(config).search_model_versions(f"name='{config.model.name}'")) == 1

    lenient = replace(config, model=replace(config.model, gate=replace(config.model.gate, on_champion_error="min")))
    third, decisions = train_step(hist_gradient_boosting, renamed)
    run_pipeline(Pipeline([third]), lenient)
    assert decisions[0].passed and decisions[0].reason.endswith('so only min applies (on_champion_error = "min")')
    assert champion_version(config) == "2"


def test_a_champion_that_cannot_be_loaded_refuses_the_candidate(tiny_project, monkeypatch):
    from mlops_template.models import registry

    config = configured(tiny_project, min=0.8)
    data = table()
    first, _ = train_step(hist_gradient_boosting, data)
    run_pipeline(Pipeline([first]), config)

    def broken(*args, **kwargs):
        raise RuntimeError("its files are gone")

    monkeypatch.setattr(registry, "load_version", broken)
    second, decisions = train_step(hist_gradient_boosting, data)
    run_pipeline(Pipeline([second]), config)
    assert not decisions[0].passed
    assert "champion v1 cannot score them (it cannot be loaded: its files are gone)" in decisions[0].reason
    assert champion_version(config) == "1"


def regression_table(n: int = 200, *, seed: int = 0) -> pd.DataFrame:
    """Rows whose label is 2x plus a little noise: a straight line fits them, their mean does not."""
    rng = np.random.default_rng(seed)
    df = pd.DataFrame({"x": rng.uniform(-1, 1, n), "z": rng.normal(size=n)})
    df["label"] = 2 * df["x"] + rng.normal(scale=0.1, size=n)
    return df


def rmse_gated(tiny_project, *, min: float | None = None):
    config = load_config(tiny_project)
    gate = replace(config.model.gate, metric="rmse", min=min, beat_champion=True)
    return replace(config, model=replace(config.model, task="regression", gate=gate))


def test_an_rmse_gate_takes_min_as_a_ceiling_and_a_lower_error_as_better(tiny_project):
    from sklearn.dummy import DummyRegressor
    from sklearn.linear_model import LinearRegression

    config, data = rmse_gated(tiny_project, min=0.5), regression_table()
    mean, refused = train_step(DummyRegressor, data)
    run_pipeline(Pipeline([mean]), config)
    assert not refused[0].passed and refused[0].value > 0.5
    assert "on 60 held-out rows exceeds the ceiling ≤ 0.5" in refused[0].reason
    assert versions(config) == []

    mean, _ = train_step(DummyRegressor, data)
    run_pipeline(Pipeline([mean]), rmse_gated(tiny_project))  # no ceiling: the mean becomes v1, the champion
    line, decisions = train_step(LinearRegression, data)
    run_pipeline(Pipeline([line]), config)
    assert decisions[0].passed and decisions[0].candidate_value < decisions[0].champion_value
    assert "≤ 0.5 on 60 held-out rows; beats champion v1" in decisions[0].reason
    assert champion_version(config) == "2"

    mean, worse = train_step(DummyRegressor, data)
    run_pipeline(Pipeline([mean]), rmse_gated(tiny_project))
    assert not worse[0].passed and "does not beat champion v2" in worse[0].reason
    assert champion_version(config) == "2"


# -- the champion moves safely ----------------------------------------------------------------


def test_a_promotion_between_gate_and_alias_move_is_not_overwritten(tiny_project, monkeypatch):
    config = configured(tiny_project)
    perfect, _ = train_step(lambda: Threshold(0.0), table(300, seed=1), split=150)
    run_pipeline(Pipeline([perfect]), config)  # v1: the perfect rule
    weak, _ = train_step(lambda: Threshold(0.6), table(300, seed=2), split=150)
    run_pipeline(Pipeline([weak]), configured(tiny_project, beat_champion=False))  # v2: a weak rule
    client = client_of(config)
    registry_module.promote(client, config.model.name, "2")  # someone rolls back to v2 by hand

    real_create = registry_module.create_version

    def promote_meanwhile(*args, **kwargs):  # fault injection: v1 is promoted again while the candidate registers
        registry_module.promote(client, config.model.name, "1")
        return real_create(*args, **kwargs)

    monkeypatch.setattr(registry_module, "create_version", promote_meanwhile)
    medium, decisions = train_step(lambda: Threshold(0.2), table(300, seed=3), split=150)
    result = run_pipeline(Pipeline([medium]), config)

    assert decisions[0].passed  # it beat v2, the champion when the gate decided
    assert champion_version(config) == "1"  # the promotion made meanwhile stands
    assert versions(config) == ["1", "2"]  # the candidate's version was removed again
    run = client.get_run(result.steps[0].run_id)
    assert run.data.tags["mlops.gate"] == "failed"
    assert run.data.tags["mlops.gate_reason"].startswith("champion moved to v1 meanwhile; f1=")
    assert "does not beat champion v1 (1)" in run.data.tags["mlops.gate_reason"]


def test_a_failed_alias_move_removes_the_version_just_registered(tiny_project, monkeypatch):
    config = configured(tiny_project)

    def refuse(client, name, version):  # fault injection: the registry refuses the alias move
        raise TrackingError(f"model registry: cannot move 'champion' of '{name}' to v{version} (database is locked)")

    monkeypatch.setattr(registry_module, "set_champion", refuse)
    step, decisions = train_step(lambda: Threshold(0.0), table())
    with pytest.raises(StepError, match="database is locked"):
        run_pipeline(Pipeline([step]), config)
    assert decisions[0].passed
    assert versions(config) == []
    assert not (tiny_project.parent / "storage" / "models").exists()


def test_two_first_registrations_at_once_both_end_registered_or_one_fails_clearly(tiny_project):
    config = load_config(tiny_project)
    run_pipeline(Pipeline([train_step(lambda: Threshold(0.0), table())[0]]), configured(tiny_project))
    client = client_of(config)
    source = client.get_model_version(config.model.name, "1")
    for attempt in range(3):
        name = f"{config.model.name}-race-{attempt}"
        barrier, outcomes = threading.Barrier(2), []

        def register(name=name, barrier=barrier, outcomes=outcomes):
            barrier.wait()
            try:
                outcomes.append(
                    str(registry_module.create_version(client, name, source.source, source.run_id, {}).version)
                )
            except TrackingError as exc:
                outcomes.append(str(exc))

        threads = [threading.Thread(target=register) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        registered = sorted(str(v.version) for v in client.search_model_versions(f"name='{name}'"))
        assert registered == sorted(o for o in outcomes if o.isdigit())
        assert registered == ["1", "2"] or (
            registered == ["1"]
            and any(o.startswith(f"model registry: cannot register a version of '{name}'") for o in outcomes)
        )


def test_a_version_lists_the_data_it_trained_on_apart_from_the_other_data_its_run_used():
    from mlops_template.models.registry import VersionInfo
    from mlops_template.tracking.tags import TAG_DATA_PREFIX, TAG_TRAINING_DATA

    tags = {
        TAG_TRAINING_DATA: "train:aa11,extra:bb22",
        TAG_DATA_PREFIX + "train": "aa11",
        TAG_DATA_PREFIX + "heldout": "cc33",
        TAG_DATA_PREFIX + "extra": "bb22",
        "other": "x",
    }
    version = VersionInfo(version="1", aliases=[], run_id=None, created=0, metric=None, tags=tags)
    assert version.training_data == ["train:aa11", "extra:bb22"]
    assert version.other_data == ["heldout:cc33"]
    assert VersionInfo(version="2", aliases=[], run_id=None, created=0, metric=None, tags={}).training_data == []


# -- registrations left in flight --------------------------------------------------------------


def _interrupted(config, *, champion_moved: bool) -> str:
    """The state a process killed inside `register` leaves: its record, and v2 of its run (champion moved or not)."""
    client = client_of(config)
    first = client.get_model_version(config.model.name, "1")
    second = client.create_model_version(config.model.name, first.source, run_id=first.run_id)
    storage = Path(config.environment().storage)
    record = storage / "registrations" / config.model.name / f"{first.run_id}.json"
    record.parent.mkdir(parents=True, exist_ok=True)
    record.write_text(json.dumps({"name": config.model.name, "run_id": first.run_id, "alias": "champion"}))
    if champion_moved:
        registry_module.set_champion(client, config.model.name, str(second.version))
    return str(second.version)


def test_a_registration_leaves_no_record_once_complete(tiny_project):
    config = configured(tiny_project, beat_champion=False)
    step, _ = train_step(hist_gradient_boosting, table())
    run_pipeline(Pipeline([step]), config)
    assert versions(config) == ["1"]
    assert list((Path(config.environment().storage) / "registrations").rglob("*.json")) == []


@pytest.mark.parametrize("command", [["models"], ["runs"]])
def test_an_interrupted_registration_without_its_alias_is_undone_at_the_next_contact(tiny_project, command):
    from click.testing import CliRunner

    from mlops_template.cli.main import main

    config = configured(tiny_project, beat_champion=False)
    step, _ = train_step(hist_gradient_boosting, table())
    run_pipeline(Pipeline([step]), config)
    left = _interrupted(config, champion_moved=False)
    assert versions(config) == ["1", left]

    result = CliRunner().invoke(main, [*command, "--project", str(tiny_project)])
    assert result.exit_code == 0, result.output
    assert f"v{left} (run " in result.stderr and "interrupted registration and was deleted" in result.stderr
    assert versions(config) == ["1"] and champion_version(config) == "1"
    assert list((Path(config.environment().storage) / "registrations").rglob("*.json")) == []


def test_an_interrupted_registration_that_moved_the_champion_is_finished_by_the_next_run(tiny_project):
    config = configured(tiny_project, beat_champion=False)
    step, _ = train_step(hist_gradient_boosting, table())
    run_pipeline(Pipeline([step]), config)
    left = _interrupted(config, champion_moved=True)
    exported = Path(config.environment().storage) / "models" / config.model.name / f"v{left}"
    assert not exported.exists()

    def noop(ctx: StepContext) -> None:
        ctx.log_metrics({"ran": 1.0})

    run_pipeline(Pipeline([noop]), config)
    assert (exported / "MLmodel").is_file()
    assert versions(config) == ["1", left] and champion_version(config) == left


def test_a_step_run_whose_process_died_is_failed_by_the_next_run_with_its_pipeline_run(tiny_project, monkeypatch):
    config = configured(tiny_project)
    client = client_of(config)

    def noop(ctx: StepContext) -> None:
        ctx.log_metrics({"ran": 1.0})

    first = run_pipeline(Pipeline([noop]), config)
    dead = client.create_run(
        first.experiment_id,
        tags={"mlops.step": "noop", "mlflow.parentRunId": first.run_id, "mlops.heartbeat": "1600000000.0"},
    )
    client.update_run(first.run_id, status="RUNNING")
    monkeypatch.setenv("MLOPS_STEP_LEASE", "30")
    from click.testing import CliRunner

    from mlops_template.cli.main import main

    listed = CliRunner().invoke(main, ["runs", "--json", "--project", str(tiny_project)])
    assert {r["run_id"]: r["status"] for r in json.loads(listed.stdout)}[first.run_id] == "LOST"

    run_pipeline(Pipeline([noop]), config)

    swept = client.get_run(dead.info.run_id)
    assert swept.info.status == "FAILED" and "no heartbeat for" in swept.data.tags["mlops.lost"]
    assert "marked FAILED by pipeline run " in swept.data.tags["mlops.lost"]
    assert client.get_run(first.run_id).info.status == "FAILED"


def test_a_logged_model_a_failed_step_left_pending_is_marked_failed(tiny_project):
    config = configured(tiny_project)
    made = []

    def train(ctx: StepContext) -> None:
        client = mlflow.MlflowClient()
        made.append(client.create_logged_model(client.get_run(ctx.run_id).info.experiment_id, source_run_id=ctx.run_id))
        raise RuntimeError("the upload was cut off")

    with pytest.raises(StepError, match="the upload was cut off"):
        run_pipeline(Pipeline([train]), config)
    [model] = made
    assert str(model.status) == "PENDING"
    assert str(client_of(config).get_logged_model(model.model_id).status) == "FAILED"
