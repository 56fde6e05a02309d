"""Promotion between two local environments: two folders, two SQLite stores, one rendered project.

`local` has two registered versions: v1, a baseline that always predicts the most frequent class,
and v2, the template's model, the champion because it beat v1 on the same held-out rows. The order is
built, not found: a constant answer scores below any model that separates the species. The gate has
no floor (`min = false`), so the baseline is registered. `prod` is a folder and a SQLite store of its
own, empty at first. Each test promotes into its own copy of the project, so none depends on another.
"""

from __future__ import annotations

import hashlib
import re
import socket
from datetime import datetime
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner
from conftest import copy_project, store_client

from mlops_template.cli.main import main
from mlops_template.cli.models import REFUSED
from mlops_template.models.model_files import sha256 as directory_sha256
from mlops_template.scaffold.new import new_project

NAME = "iris-promote"
PROD = '[environments.prod]\nstorage = "prod/data"\ntracking_uri = "sqlite:///prod/mlruns.db"\n\n'
_RUN_VARIABLES = ("MLOPS_ENVIRONMENT", "MLOPS_STORAGE", "MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "MLFLOW_RUN_ID")


def cli(project: Path, *args: str):
    return CliRunner().invoke(main, [*args, "--project", str(project)])


def set_prod(root: Path, section: str) -> None:
    """Replace the template's `[environments.prod]` (a bucket and a server) by `section`."""
    toml = root / "mlops.toml"
    text, found = re.subn(r"\[environments\.prod\]\n(?:[^\[\n].*\n)*", section, toml.read_text())
    assert found == 1
    toml.write_text(text)


BASELINE = (
    '    if p.get("baseline"):  # a constant answer: the floor any real model beats\n'
    "        from sklearn.dummy import DummyClassifier\n\n"
    '        model = DummyClassifier(strategy="most_frequent")\n'
)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The project with `local` v1 (the baseline) and v2 (champion, better on the same rows); `prod` empty.

    Read only: each test takes a copy.
    """
    with pytest.MonkeyPatch.context() as mp:
        for var in _RUN_VARIABLES:
            mp.delenv(var, raising=False)
        root = new_project(NAME, directory=tmp_path_factory.mktemp("promote") / NAME, lock=False)
        set_prod(root, PROD)
        toml = root / "mlops.toml"
        toml.write_text(toml.read_text().replace("gate = { min = 0.8,", "gate = { min = false,"))
        step = next((root / "src").glob("*/models/train_model.py"))
        fit = "    model.fit(X, train[target])\n"
        assert fit in step.read_text()
        step.write_text(step.read_text().replace(fit, BASELINE + fit))
        weak = cli(root, "run", "-P", "train_model.baseline=true")
        assert weak.exit_code == 0, weak.output
        assert f"{NAME} v1 is champion" in weak.output
        strong = cli(root, "run", "--step", "train_model")
        assert strong.exit_code == 0, strong.output
        assert f"{NAME} v2 is champion" in strong.output
        (root / "prod").mkdir()
        prod_client(root).search_experiments()  # its tables made once (seconds), not by every test's copy
    return root


@pytest.fixture
def project(trained: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for var in _RUN_VARIABLES:
        monkeypatch.delenv(var, raising=False)
    return copy_project(trained, tmp_path / NAME)


def local_client(project: Path):
    return store_client(f"sqlite:///{project / 'mlruns.db'}")


def prod_client(project: Path):
    return store_client(f"sqlite:///{project / 'prod' / 'mlruns.db'}")


def prod_files(project: Path) -> dict[str, str]:
    """Every file prod holds, with its sha256: its storage and its store's artifacts (`prod/mlruns/`), the database aside."""
    return {
        str(path.relative_to(project)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted((project / "prod").rglob("*"))
        if path.is_file() and path.name != "mlruns.db"
    }


def prod_versions(project: Path) -> list[str]:
    if not (project / "prod" / "mlruns.db").exists():
        return []
    return sorted(str(v.version) for v in prod_client(project).search_model_versions(f"name='{NAME}'"))


def prod_logged_models(project: Path, source: str) -> list:
    client = prod_client(project)
    experiment = client.get_experiment_by_name(NAME)
    return client.search_logged_models(
        [experiment.experiment_id], filter_string=f"tags.`mlops.promoted_from` = '{source}'"
    )


def assert_one_line_error(result, *parts: str) -> None:
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error:"), result.output
    for part in parts:
        assert part in " ".join(result.output.split()), result.output


# -- promotion -----------------------------------------------------------------------------------


def test_promotion_copies_files_and_snapshots_and_prod_predicts_with_the_copy(project):
    source = local_client(project).get_model_version(NAME, "2")

    result = cli(project, "promote", "2", "--from", "local", "--to", "prod")

    assert result.exit_code == 0, result.output
    assert "'champion' points at it" in result.output
    client = prod_client(project)
    copy = client.get_model_version_by_alias(NAME, "champion")
    assert str(copy.version) == "1"
    tags = copy.tags
    assert tags["mlops.promoted_from"] == "local:2"
    assert tags["mlops.promoted_from_run"] == source.run_id
    assert tags["mlops.promoted_from_uri"] == f"sqlite:///{project / 'mlruns.db'}"
    assert tags["mlops.promoted_by"]
    assert datetime.fromisoformat(tags["mlops.promoted_at"]).tzinfo is not None
    for key in ("mlops.model_sha256", "mlops.training_data", "mlops.heldout_data"):
        assert tags[key] == source.tags[key]
    # The snapshots it learnt from and was checked on: in prod's storage under the same ids, the same bytes.
    for ref in (source.tags["mlops.training_data"], source.tags["mlops.heldout_data"]):
        dataset, snapshot_id = ref.split(":")
        for suffix in (".parquet", ".json"):
            copied = project / "prod" / "data" / "snapshots" / dataset / f"{snapshot_id}{suffix}"
            original = project / "data" / "snapshots" / dataset / f"{snapshot_id}{suffix}"
            assert copied.read_bytes() == original.read_bytes()
    # The model files byte for byte, signature and input example with them; exported for consumers without MLflow.
    export = project / "prod" / "data" / "models" / NAME / "v1"
    assert directory_sha256(export) == source.tags["mlops.model_sha256"]
    assert "signature:" in (export / "MLmodel").read_text() and (export / "input_example.json").is_file()
    logged = client.get_logged_model(copy.source.removeprefix("models:/"))
    assert logged.tags["mlops.gate"] == "passed" and logged.tags["mlops.promoted_from"] == "local:2"
    run = client.get_run(copy.run_id)
    assert run.data.tags["mlops.gate_data"] == source.tags["mlops.heldout_data"]
    assert run.data.metrics["f1"] > 0.8

    predicted = cli(project, "run", "--environment", "prod", "--step", "predict")

    assert predicted.exit_code == 0, predicted.output
    assert f"model {NAME} v1" in predicted.output
    [file] = (project / "prod" / "data" / "predictions").glob("*.parquet")
    predictions = pd.read_parquet(file)
    heldout = pd.read_parquet(project / "data" / "datasets" / "heldout.parquet")
    assert len(predictions) == len(heldout) and set(predictions["model_version"]) == {1}


def test_a_second_promotion_copies_and_registers_nothing(project):
    first = cli(project, "promote", "2", "--from", "local", "--to", "prod")
    assert first.exit_code == 0, first.output
    before = prod_files(project)
    assert any(key.endswith("model.skops") for key in before)  # the logged model's files are counted too

    again = cli(project, "promote", "2", "--from", "local", "--to", "prod")

    assert again.exit_code == 0, again.output
    assert "is prod's v1 already" in again.output and "nothing to do" in again.output
    assert prod_files(project) == before
    assert prod_versions(project) == ["1"]
    assert len(prod_logged_models(project, "local:2")) == 1


def test_a_version_worse_on_the_same_rows_is_refused_and_the_champion_stays(project):
    assert cli(project, "promote", "2", "--from", "local", "--to", "prod").exit_code == 0

    refused = cli(project, "promote", "1", "--from", "local", "--to", "prod")

    assert refused.exit_code == REFUSED, refused.output
    text = " ".join(refused.output.split())
    found = re.search(r"f1=([\d.]+) does not beat champion v1 \(([\d.]+)\) on the (\d+) held-out rows", text)
    assert found, text
    assert float(found.group(1)) < float(found.group(2))
    assert "nothing registered, 'champion' unchanged" in text
    assert prod_versions(project) == ["1"]
    assert str(prod_client(project).get_model_version_by_alias(NAME, "champion").version) == "1"
    [logged] = prod_logged_models(project, "local:1")
    assert logged.tags["mlops.gate"] == "failed"
    assert found.group(1) in logged.tags["mlops.gate_reason"] and found.group(2) in logged.tags["mlops.gate_reason"]
    assert not (project / "prod" / "data" / "models" / NAME / "v2").exists()
    before = prod_files(project)

    again = cli(project, "promote", "1", "--from", "local", "--to", "prod")  # decided anew, copied once

    assert again.exit_code == REFUSED, again.output
    assert "model files: none (copied before)" in again.output
    assert prod_files(project) == before
    assert len(prod_logged_models(project, "local:1")) == 1 and prod_versions(project) == ["1"]


def move_champion_while_registering(project: Path, monkeypatch: pytest.MonkeyPatch, version: str) -> None:
    """Fault injection: someone points prod's `champion` at `version` just as the promoted copy is registered."""
    from mlops_template.models import registry

    real_create = registry.create_version

    def create_meanwhile(*args, **kwargs):
        prod_client(project).set_registered_model_alias(NAME, "champion", version)
        return real_create(*args, **kwargs)

    monkeypatch.setattr(registry, "create_version", create_meanwhile)


def test_a_champion_moved_meanwhile_to_a_better_model_refuses_the_copy_and_removes_its_version(project, monkeypatch):
    assert cli(project, "promote", "2", "--from", "local", "--to", "prod", "--alias", "candidate").exit_code == 0
    move_champion_while_registering(project, monkeypatch, "1")  # prod v1: the copy of local v2, the better one

    refused = cli(project, "promote", "1", "--from", "local", "--to", "prod")  # judged with no champion yet

    assert refused.exit_code == REFUSED, refused.output
    text = " ".join(refused.output.split())
    assert "champion moved to v1 meanwhile; f1=" in text and "does not beat champion v1" in text
    assert "nothing registered, 'champion' unchanged" in text
    assert prod_versions(project) == ["1"]  # the version made for the copy was removed again
    assert str(prod_client(project).get_model_version_by_alias(NAME, "champion").version) == "1"
    [logged] = prod_logged_models(project, "local:1")
    assert logged.tags["mlops.gate"] == "failed"
    assert logged.tags["mlops.gate_reason"].startswith("champion moved to v1 meanwhile; f1=")
    assert not (project / "prod" / "data" / "models" / NAME / "v2").exists()


def test_a_champion_moved_meanwhile_to_a_worse_model_is_judged_again_and_beaten(project, monkeypatch):
    assert cli(project, "promote", "1", "--from", "local", "--to", "prod", "--alias", "candidate").exit_code == 0
    move_champion_while_registering(project, monkeypatch, "1")  # prod v1: the copy of local v1, the weaker one

    passed = cli(project, "promote", "2", "--from", "local", "--to", "prod")

    assert passed.exit_code == 0, passed.output
    text = " ".join(passed.output.split())
    assert "champion moved to v1 meanwhile; f1=" in text and "beats champion v1" in text
    assert str(prod_client(project).get_model_version_by_alias(NAME, "champion").version) == "2"
    assert (project / "prod" / "data" / "models" / NAME / "v2" / "MLmodel").exists()
    [logged] = prod_logged_models(project, "local:2")
    assert logged.tags["mlops.gate"] == "passed"
    assert logged.tags["mlops.gate_reason"].startswith("champion moved to v1 meanwhile; f1=")


def test_another_alias_is_set_without_the_champion_rule(project):
    assert cli(project, "promote", "2", "--from", "local", "--to", "prod").exit_code == 0

    result = cli(project, "promote", "1", "--from", "local", "--to", "prod", "--alias", "candidate")

    assert result.exit_code == 0, result.output
    client = prod_client(project)
    assert str(client.get_model_version_by_alias(NAME, "candidate").version) == "2"
    assert str(client.get_model_version_by_alias(NAME, "champion").version) == "1"
    assert "beat" not in result.output  # only `min` applied


def test_the_gate_can_score_a_prod_dataset_less_the_rows_the_copy_trained_on(project):
    featurized = pd.read_parquet(project / "data" / "datasets" / "featurized.parquet")
    heldout = pd.read_parquet(project / "data" / "datasets" / "heldout.parquet")
    featurized.to_csv(project / "recent.csv", index=False)
    added = cli(project, "data", "add", str(project / "recent.csv"), "--name", "recent", "--environment", "prod")
    assert added.exit_code == 0, added.output

    result = cli(project, "promote", "2", "--from", "local", "--to", "prod", "--evaluate", "recent")

    assert result.exit_code == 0, result.output
    assert re.search(r"gate passed on recent:[0-9a-f]{16}", result.output)
    assert f"on {len(heldout)} held-out rows" in " ".join(result.output.split())  # its training rows left out
    assert len(featurized) > len(heldout)


def test_a_dry_run_decides_and_writes_nothing(project):
    result = cli(project, "promote", "2", "--from", "local", "--to", "prod", "--dry-run")

    assert result.exit_code == 0, result.output
    assert "would copy model files; snapshots train:" in result.output
    assert "prod's gate passed" in result.output and "nothing was written to prod" in result.output
    assert prod_files(project) == {} and prod_versions(project) == []


# -- bad input: one line, exit 1, nothing in prod --------------------------------------------------


def assert_prod_untouched(project: Path) -> None:
    assert prod_files(project) == {}
    assert prod_versions(project) == []


def test_an_unknown_environment_is_named_with_the_choices(project):
    result = cli(project, "promote", "2", "--from", "local", "--to", "prdo")

    assert_one_line_error(result, "unknown environment 'prdo'", "did you mean 'prod'?")
    assert_prod_untouched(project)


def test_an_unknown_version_lists_the_source_versions(project):
    result = cli(project, "promote", "9", "--from", "local", "--to", "prod")

    assert_one_line_error(result, f"environment 'local': model '{NAME}' has no version '9'; valid: 1, 2")
    assert_prod_untouched(project)


def test_the_same_environment_twice_points_to_the_one_environment_form(project):
    result = cli(project, "promote", "2", "--from", "local", "--to", "local")

    assert_one_line_error(result, "--from and --to are both 'local'", "mlops promote VERSION --environment local")


def test_source_files_that_fail_their_sha256_are_not_copied(project):
    source = local_client(project).get_model_version(NAME, "2")
    logged = local_client(project).get_logged_model(source.source.removeprefix("models:/"))
    model_file = Path(logged.artifact_location.removeprefix("file://")) / "model.skops"
    model_file.write_bytes(model_file.read_bytes() + b"\0")

    result = cli(project, "promote", "2", "--from", "local", "--to", "prod")

    assert_one_line_error(result, f"the files of {NAME} v2 do not match its mlops.model_sha256", "nothing was copied")
    assert_prod_untouched(project)


def test_a_snapshot_missing_from_the_source_storage_stops_before_any_copy(project):
    ref = local_client(project).get_model_version(NAME, "2").tags["mlops.training_data"]
    dataset, snapshot_id = ref.split(":")
    (project / "data" / "snapshots" / dataset / f"{snapshot_id}.parquet").unlink()

    result = cli(project, "promote", "2", "--from", "local", "--to", "prod")

    assert_one_line_error(result, f"environment 'local': snapshot {ref} of {NAME} v2 cannot be read")
    assert_prod_untouched(project)


def test_an_unreachable_prod_is_named_in_seconds(project):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # nothing listens there once closed
    set_prod(project, f'[environments.prod]\nstorage = "prod/data"\ntracking_uri = "http://127.0.0.1:{port}"\n\n')

    result = cli(project, "promote", "2", "--from", "local", "--to", "prod")

    assert_one_line_error(result, f"environment 'prod': tracking server http://127.0.0.1:{port} is unreachable")
    assert prod_files(project) == {}


def test_evaluate_without_a_target_environment_is_refused(project):
    result = cli(project, "promote", "2", "--evaluate", "recent")

    assert_one_line_error(result, "--evaluate and --dry-run go with --from E1 --to E2")


def test_a_copy_that_fails_midway_leaves_no_model_run_or_version_and_a_retry_completes_it(project, monkeypatch):
    import mlflow

    upload = mlflow.MlflowClient.log_model_artifacts

    def upload_then_fail(self, model_id, local_dir, artifact_path=None):  # injected: the store fails mid-copy
        upload(self, model_id, local_dir, artifact_path)
        raise OSError("connection reset by peer")

    monkeypatch.setattr(mlflow.MlflowClient, "log_model_artifacts", upload_then_fail)

    failed = cli(project, "promote", "2", "--from", "local", "--to", "prod")

    assert_one_line_error(failed, "environment 'prod': tracking store", "connection reset by peer")
    assert prod_versions(project) == [] and prod_logged_models(project, "local:2") == []
    experiment = prod_client(project).get_experiment_by_name(NAME)
    assert prod_client(project).search_runs([experiment.experiment_id]) == []
    monkeypatch.undo()

    retry = cli(project, "promote", "2", "--from", "local", "--to", "prod")

    assert retry.exit_code == 0, retry.output
    assert "there already" in retry.output  # the snapshots copied before the failure are complete
    assert prod_versions(project) == ["1"] and len(prod_logged_models(project, "local:2")) == 1


def test_a_variable_pointing_both_environments_at_one_store_is_refused(project, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{project / 'mlruns.db'}")

    result = cli(project, "promote", "2", "--from", "local", "--to", "prod")

    assert_one_line_error(result, "environments 'local' and 'prod' share one tracking store", "MLFLOW_TRACKING_URI")
    assert_prod_untouched(project)
