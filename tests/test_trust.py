"""Models loaded only when trusted: no unpickling unless an environment allows it, types checked, sha256 required.

Each test works on a tiny project with two environments, `local` and `prod`, each a folder and a SQLite
store of its own; `[environments.<name>.model]` sets what each trusts.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from urllib.parse import urlparse

import mlflow
import numpy as np
import pytest
from conftest import store_client
from test_models import SignRule, hist_gradient_boosting, table, train_step

from mlops_template import Pipeline, StepContext, load_config
from mlops_template.errors import IntegrityError, ModelError, StepError
from mlops_template.models.promotion import promote_between
from mlops_template.pipeline.runner import run_pipeline


def write_project(root: Path, *, local: str = "", prod: str = "", model: str = "") -> None:
    """`mlops.toml` with `local` and `prod`, and each one's `[environments.<name>.model]` keys (TOML lines)."""
    text = (
        f'[project]\nname = "trust"\npackage = "trust"\n\n[model]\ngate = {{ min = false }}\n{model}\n'
        f'[environments.local]\nstorage = "{root / "local"}"\ntracking_uri = "sqlite:///{root / "local.db"}"\n\n'
        f'[environments.prod]\nstorage = "{root / "prod"}"\ntracking_uri = "sqlite:///{root / "prod.db"}"\n\n'
        f"[environments.local.model]\n{local}\n\n[environments.prod.model]\n{prod}\n"
    )
    (root / "mlops.toml").write_text(text, encoding="utf-8")


@pytest.fixture
def root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for var in ("MLOPS_ENVIRONMENT", "MLOPS_STORAGE", "MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "MLFLOW_RUN_ID"):
        monkeypatch.delenv(var, raising=False)
    write_project(tmp_path)
    return tmp_path


def client(root: Path, env: str = "local"):
    return store_client(f"sqlite:///{root / f'{env}.db'}")


def versions(root: Path, env: str = "local") -> list[str]:
    if not (root / f"{env}.db").exists():
        return []
    return sorted(str(v.version) for v in client(root, env).search_model_versions("name='trust'"))


def predictions(root: Path, env: str = "local") -> list:
    """Run a step that predicts with the champion of `env`; what it predicted."""
    out = []

    def predict(ctx: StepContext) -> None:
        out.append(ctx.load_champion().predict(table().iloc[140:]))

    run_pipeline(Pipeline([predict]), load_config(root), environment=env)
    return out


def stored_folder(root: Path, version: str, env: str = "local") -> Path:
    return Path(urlparse(client(root, env).get_model_version_download_uri("trust", version)).path)


def retag_sha256(root: Path, version: str, env: str = "local") -> None:
    """What someone with registry write access can do: record the sha256 of the files as they are now."""
    from mlops_template.models.model_files import sha256 as directory_sha256

    sha = directory_sha256(stored_folder(root, version, env))
    client(root, env).set_model_version_tag("trust", version, "mlops.model_sha256", sha)


# -- models that unpickle ------------------------------------------------------------------------


def test_a_pyfunc_is_refused_when_logged_and_allowed_in_one_environment_only(root):
    step, _ = train_step(SignRule, table())
    with pytest.raises(StepError, match=r"cloudpickled\), which runs code .* allow_pickle = true in "):
        run_pipeline(Pipeline([step]), load_config(root))
    assert versions(root) == []  # refused before it was logged, so nothing to register

    write_project(root, local="allow_pickle = true")
    run_pipeline(Pipeline([step]), load_config(root))
    assert versions(root) == ["1"]
    assert np.array_equal(predictions(root)[0], table()["label"].iloc[140:].to_numpy())

    write_project(root)  # the same registry, read where pickle is not allowed
    with pytest.raises(StepError, match=r"model 'trust' v1: loading it unpickles .* \[environments\.local\.model\]"):
        predictions(root)


def test_a_model_logged_by_a_callable_that_unpickles_is_refused_before_the_gate(root):
    def log_rule(name):
        return mlflow.pyfunc.log_model(name=name, python_model=SignRule(), pip_requirements=["mlflow"])

    step, decisions = train_step(lambda: None, table(), log_model=log_rule)
    with pytest.raises(StepError, match=r"the model logged: loading it unpickles"):
        run_pipeline(Pipeline([step]), load_config(root))
    assert decisions == [] and versions(root) == []


# -- skops files -----------------------------------------------------------------------------------


def _double(x):
    return x * 2


def doubling_model():
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline as SkPipeline
    from sklearn.preprocessing import FunctionTransformer

    data = table()
    return SkPipeline([("double", FunctionTransformer(_double)), ("model", LogisticRegression())]).fit(
        data[["x", "z"]], data["label"]
    )


def test_a_skops_file_is_loaded_only_with_recorded_and_trusted_types(root):
    import skops.io
    import yaml

    step, _ = train_step(hist_gradient_boosting, table())
    run_pipeline(Pipeline([step]), load_config(root))
    folder = stored_folder(root, "1")

    skops.io.dump(doubling_model(), folder / "model.skops")  # a model with code of its own put in its place
    retag_sha256(root, "1")
    with pytest.raises(StepError, match=r"holds types not recorded when it was saved \(test_trust\._double\)") as e:
        predictions(root)
    assert isinstance(e.value.__cause__, IntegrityError)

    mlmodel = yaml.safe_load((folder / "MLmodel").read_text())  # its MLmodel edited to record them too
    mlmodel["flavors"]["sklearn"]["skops_trusted_types"].append("test_trust._double")
    (folder / "MLmodel").write_text(yaml.safe_dump(mlmodel))
    retag_sha256(root, "1")
    with pytest.raises(StepError, match=r"types skops will not load without trusting their code: test_trust\._double"):
        predictions(root)

    write_project(root, model='trusted_types = ["test_trust._double"]')  # the team trusts it
    [labels] = predictions(root)
    assert (labels == table()["label"].iloc[140:].to_numpy()).mean() > 0.8


def test_a_custom_type_is_refused_when_logged_unless_listed(root):
    step, _ = train_step(doubling_model, table())
    with pytest.raises(StepError, match=r"types skops will not load without trusting their code: test_trust\._double"):
        run_pipeline(Pipeline([step]), load_config(root))
    write_project(root, model='trusted_types = ["test_trust."]')  # a whole package
    run_pipeline(Pipeline([step]), load_config(root))
    assert versions(root) == ["1"]


# -- sha256 ----------------------------------------------------------------------------------------


def test_a_version_without_its_sha256_is_refused_by_predict_the_gate_and_promotion(root):
    step, decisions = train_step(hist_gradient_boosting, table())
    run_pipeline(Pipeline([step]), load_config(root))
    client(root).delete_model_version_tag("trust", "1", "mlops.model_sha256")

    with pytest.raises(StepError, match=r"model 'trust' v1 carries no mlops.model_sha256, so its files cannot be"):
        predictions(root)
    run_pipeline(Pipeline([step]), load_config(root))
    assert not decisions[-1].passed and "champion v1 cannot score them (it cannot be loaded: model 'trust' v1 " in (
        decisions[-1].reason
    )
    with pytest.raises(IntegrityError, match="v1 carries no mlops.model_sha256"):
        promote_between(load_config(root), "1", source="local", target="prod")
    assert versions(root) == ["1"] and versions(root, "prod") == []


def test_changed_files_are_refused_by_predict_and_the_gate(root):
    step, decisions = train_step(hist_gradient_boosting, table())
    run_pipeline(Pipeline([step]), load_config(root))
    mlmodel = stored_folder(root, "1") / "MLmodel"
    mlmodel.write_text(mlmodel.read_text() + "\n# changed\n")

    with pytest.raises(StepError, match="files do not match the sha256 recorded at registration"):
        predictions(root)
    run_pipeline(Pipeline([step]), load_config(root))
    assert not decisions[-1].passed and "files do not match the sha256" in decisions[-1].reason


# -- promotion scores apart -------------------------------------------------------------------------


class EnvProbe(mlflow.pyfunc.PythonModel):
    """The sign rule, noting on each call what credentials its process could reach."""

    def __init__(self, report: str) -> None:
        self.report = report

    def predict(self, context, model_input, params=None):
        import boto3

        seen = {
            "pid": os.getpid(),
            "variables": sorted(k for k in os.environ if k.startswith(("AWS_ACCESS", "AWS_SECRET", "MLFLOW_TRACKING"))),
            "aws_profile": os.environ.get("AWS_PROFILE"),
            "credentials": boto3.Session().get_credentials() is not None,
        }
        with open(self.report, "a") as out:
            out.write(json.dumps(seen) + "\n")
        return (model_input["x"] > 0).astype(int).to_numpy()


def test_promotion_scores_the_copy_in_a_process_holding_no_credentials(root, monkeypatch):
    report = root / "probe.jsonl"
    write_project(root, model="allow_pickle = true")
    step, _ = train_step(lambda: EnvProbe(str(report)), table())
    run_pipeline(Pipeline([step]), load_config(root))
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAPRODONLY")  # the target's credentials, in this process
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "prod-secret")
    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", "prod-token")
    report.unlink()

    done = promote_between(load_config(root), "1", source="local", target="prod")

    assert done.passed and done.version == "1", done.decision
    [seen] = [json.loads(line) for line in report.read_text().splitlines()]  # called once, on every gate row
    assert seen["pid"] != os.getpid()
    assert seen["variables"] == [] and seen["aws_profile"] is None and seen["credentials"] is False
    import boto3

    assert boto3.Session().get_credentials() is not None  # here they are found: the check could fail


def test_promotion_refuses_a_copy_the_target_does_not_trust_before_writing_there(root):
    write_project(root, local="allow_pickle = true")
    step, _ = train_step(SignRule, table())
    run_pipeline(Pipeline([step]), load_config(root))

    with pytest.raises(ModelError, match=r"trust local:1: loading it unpickles .* \[environments\.prod\.model\]"):
        promote_between(load_config(root), "1", source="local", target="prod")
    assert versions(root, "prod") == [] and not (root / "prod").exists()
