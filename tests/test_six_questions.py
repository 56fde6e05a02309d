"""The six questions a team asks, each answered by one command, on a two-version history of a rendered project.

v1 trains on the iris raw data; then the raw data loses one class and gains a column, `max_depth`
changes in `mlops.toml` and `feat_data` gains a feature, all committed; v2 trains on that. A third,
partial run is made from a dirty work tree. `show`, `diff` and `reproduce` are checked against what
the tracking store and storage hold, never against numbers written here.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner
from conftest import copy_project, project_client

from mlops_template import load_config
from mlops_template.cli.main import main
from mlops_template.data.snapshots import open_snapshots
from mlops_template.scaffold.new import new_project

NAME = "lineage-story"
PACKAGE = "lineage_story"
FEATURES = Path("src") / PACKAGE / "features" / "build_features.py"
_RUN_VARIABLES = ("MLOPS_ENVIRONMENT", "MLOPS_STORAGE", "MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "MLFLOW_RUN_ID")


@dataclass(frozen=True)
class Story:
    root: Path
    v1: str  # pipeline run ids
    v2: str
    dirty: str  # make_data + feat_data from an uncommitted change
    commit_v1: str
    commit_v2: str


def mlops(*args: str, root: Path):
    return CliRunner().invoke(main, [*args, "--project", str(root)], catch_exceptions=False)


def forget_package() -> None:
    """Drop the project's modules this process imported, so the next run imports the code as it is now."""
    for module in [m for m in sys.modules if m == PACKAGE or m.startswith(PACKAGE + ".")]:
        del sys.modules[module]


def git(root: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=root, check=True, capture_output=True, text=True).stdout.strip()


def run_pipeline_cli(root: Path, *args: str) -> str:
    forget_package()
    result = mlops("run", *args, root=root)
    assert result.exit_code == 0, result.output
    return result.output.split("pipeline run ", 1)[1].split()[0]


def iris() -> pd.DataFrame:
    from sklearn.datasets import load_iris

    data = load_iris(as_frame=True)
    df = data.frame.rename(columns=lambda c: c.replace(" (cm)", "").replace(" ", "_"))
    df["species"] = data.target_names[df.pop("target")]
    return df


@pytest.fixture(scope="module")
def story(tmp_path_factory: pytest.TempPathFactory) -> Story:
    with pytest.MonkeyPatch.context() as mp:
        for var in _RUN_VARIABLES:
            mp.delenv(var, raising=False)
        root = new_project(NAME, directory=tmp_path_factory.mktemp("story") / NAME, lock=False)
        raw = root / "data" / "raw" / "iris.csv"
        iris().to_csv(raw, index=False)
        commit_v1 = git(root, "rev-parse", "HEAD")
        v1 = run_pipeline_cli(root)

        df = pd.read_csv(raw)
        df[df.species != "setosa"].assign(petal_sum=lambda d: d.petal_length + d.petal_width).to_csv(raw, index=False)
        toml = root / "mlops.toml"
        toml.write_text(toml.read_text().replace("max_depth = 5", "max_depth = 2"))
        features = root / FEATURES
        text = features.read_text()
        features.write_text(
            text.replace(
                'petal_ratio=df["petal_length"] / df["petal_width"],',
                'petal_ratio=df["petal_length"] / df["petal_width"],\n'
                '            sepal_ratio=df["sepal_length"] / df["sepal_width"],',
            )
        )
        git(root, "commit", "-qam", "Drop setosa, shallower trees, a sepal ratio")
        commit_v2 = git(root, "rev-parse", "HEAD")
        v2 = run_pipeline_cli(root)

        features.write_text(features.read_text().replace("sepal_ratio=", "sepal_quotient="))
        (root / "aws-credentials.ini").write_text("aws_secret_access_key = do-not-record\n")
        dirty = run_pipeline_cli(root, "--step", "make_data", "--step", "feat_data")
        git(root, "checkout", "--", ".")
        (root / "aws-credentials.ini").unlink()
        forget_package()
    return Story(root, v1, v2, dirty, commit_v1, commit_v2)


@pytest.fixture(autouse=True)
def _clean_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in _RUN_VARIABLES:
        monkeypatch.delenv(var, raising=False)


def step_run(client, pipeline_run: str, step: str):
    [found] = client.search_runs(
        [client.get_run(pipeline_run).info.experiment_id],
        f"tags.`mlflow.parentRunId` = '{pipeline_run}' and tags.`mlops.step` = '{step}'",
    )
    return found


# -- show ---------------------------------------------------------------------------------------


def test_show_champion_names_its_training_snapshot_and_where_the_model_is_stored(story):
    client = project_client(story.root)
    champion = client.get_model_version_by_alias(NAME, "champion")
    result = mlops("show", "champion", root=story.root)
    assert result.exit_code == 0, result.output
    training = champion.tags["mlops.training_data"]
    assert training in result.output
    exported = open_snapshots(load_config(story.root)).storage.uri(f"models/{NAME}/v{champion.version}")
    assert exported in result.output
    assert f"models:/{NAME}/{champion.version}" in result.output
    assert champion.run_id in result.output

    shown = json.loads(mlops("show", "champion", "--json", root=story.root).output)
    assert shown["model"]["version"] == str(champion.version) and "champion" in shown["model"]["aliases"]
    assert shown["model"]["storage_uri"] == exported and shown["model"]["training_data"] == training
    assert shown["run_id"] == client.get_run(champion.run_id).data.tags["mlflow.parentRunId"]
    assert shown["selected_step"] == "train_model"
    train = next(s for s in shown["steps"] if s["name"] == "train_model")
    assert train["gate"] == client.get_run(champion.run_id).data.tags["mlops.gate"]
    assert {w["name"]: w["id"] for w in train["writes"]}["train"] == training.split(":")[1]
    assert train["metrics"] == client.get_run(champion.run_id).data.metrics


def test_show_lists_every_snapshot_read_and_written_with_rows_and_location(story):
    shown = json.loads(mlops("show", story.v1, "--json", root=story.root).output)
    assert [s["name"] for s in shown["steps"]] == ["make_data", "feat_data", "train_model", "predict"]
    make = shown["steps"][0]
    store = open_snapshots(load_config(story.root))
    [raw] = make["reads"]
    snapshot = store.resolve(f"raw:{raw['id']}")
    assert (raw["rows"], raw["uri"]) == (snapshot.rows, store.uri(snapshot))
    [processed] = make["writes"]
    assert processed["name"] == "processed" and store.resolve(f"processed:{processed['id']}").rows == processed["rows"]
    assert shown["code"]["commit"] == story.commit_v1 and shown["code"]["dirty"] == "false"
    assert len(shown["code"]["packages"]) == 12


def test_a_run_is_named_by_a_prefix_and_latest(story):
    by_prefix = json.loads(mlops("show", story.v2[:8], "--json", root=story.root).output)
    assert by_prefix["run_id"] == story.v2
    latest = json.loads(mlops("runs", "-n", "1", "--json", root=story.root).output)[0]["run_id"]
    assert json.loads(mlops("show", "latest", "--json", root=story.root).output)["run_id"] == latest


# -- diff ---------------------------------------------------------------------------------------


def test_diff_names_the_changed_data_code_param_and_metric(story):
    result = mlops("diff", story.v1, story.v2, root=story.root)
    assert result.exit_code == 0, result.output
    out = result.output
    assert "max_depth: 5 → 2" in out
    assert "columns added: petal_sum" in out
    assert "rows 150 → 100: 50 removed" in out  # one class of iris's 150 rows
    assert f"{story.commit_v1[:12]} (dirty false) → {story.commit_v2[:12]} (dirty false): commits differ" in out
    assert "M mlops.toml" in out and f"M {FEATURES.as_posix()}" in out
    client = project_client(story.root)
    f1 = [step_run(client, r, "train_model").data.metrics["f1"] for r in (story.v1, story.v2)]
    assert f1[0] != f1[1]
    assert f"f1: {f1[0]:.4g} → {f1[1]:.4g} ({f1[1] - f1[0]:+.4g})" in out
    # The likely causes first: data, then code, then params, then packages.
    assert out.index("data") < out.index("code") < out.index("params") < out.index("packages")


def test_diff_json_carries_the_same(story):
    result = mlops("diff", story.v1, story.v2, "--json", root=story.root)
    d = json.loads(result.output)
    params = {(c["step"], c["name"]): (c["a"], c["b"]) for c in d["params"]}
    assert params[("train_model", "max_depth")] == ("5", "2")
    raw = next(c for c in d["data"] if c["name"] == "raw")
    assert not raw["same"]
    assert raw["summary"]["columns_added"] == ["petal_sum"]
    assert (raw["summary"]["rows_a"], raw["summary"]["only_in_a"], raw["summary"]["only_in_b"]) == (150, 50, 0)
    f1 = next(c for c in d["metrics"] if (c["step"], c["name"]) == ("train_model", "f1"))
    assert f1["delta"] == pytest.approx(f1["b"] - f1["a"]) and f1["delta"] != 0
    assert (d["code"]["commit_a"], d["code"]["commit_b"]) == (story.commit_v1, story.commit_v2)
    assert sorted(p for _, p in d["code"]["files"]) == sorted(["mlops.toml", FEATURES.as_posix()])
    assert d["packages"] == []  # one interpreter made both runs


def test_diff_takes_a_commit_tag_that_is_an_option_for_no_commit_and_runs_nothing_with_it(story):
    client = project_client(story.root)
    pipeline = client.get_run(story.v1)
    runs = [pipeline, *client.search_runs([pipeline.info.experiment_id], f"tags.`mlflow.parentRunId` = '{story.v1}'")]
    written = story.root.parent / "written-by-git"
    try:
        for run in runs:  # what anyone who may write tags can set
            client.set_tag(run.info.run_id, "mlops.git_commit", f"--output={written}")
        result = mlops("diff", story.v1, story.v2, "--json", root=story.root)
    finally:
        for run in runs:
            client.set_tag(run.info.run_id, "mlops.git_commit", run.data.tags["mlops.git_commit"])
    assert result.exit_code == 0, result.output
    code = json.loads(result.output)["code"]
    assert code["files"] is None and f"'--output={written}' is not a commit SHA" in code["problem"]
    assert not written.exists()


def test_diff_compares_the_rows_each_training_held_out_and_predicts_input_apart(story):
    d = json.loads(mlops("diff", story.v1, story.v2, "--json", root=story.root).output)
    client = project_client(story.root)
    trained = [step_run(client, r, "train_model") for r in (story.v1, story.v2)]
    held_out = [run.data.tags["mlops.output.heldout"] for run in trained]
    heldout = next(c for c in d["data"] if c["name"] == "heldout")
    assert (heldout["a"], heldout["b"]) == tuple(held_out) and not heldout["same"]
    rows = [next(i.dataset for i in run.inputs.dataset_inputs if i.dataset.name == "heldout") for run in trained]
    assert held_out[0] != held_out[1] and rows[0].digest == held_out[0]
    assert (heldout["summary"]["rows_a"], heldout["summary"]["rows_b"]) == (45, 30)  # 30 % of 150 and of 100
    predicted = [step_run(client, r, "predict") for r in (story.v1, story.v2)]
    read = [
        next(i.dataset.digest for i in run.inputs.dataset_inputs if i.dataset.name == "heldout") for run in predicted
    ]
    assert read == held_out  # each run's own model became champion, so predict read that run's held-out rows
    assert not [c for c in d["data"] if c["name"].startswith("heldout read by")]


def test_a_step_that_read_another_runs_snapshot_is_compared_apart_from_the_runs_own():
    from mlops_template.lineage.show import DataRef, RunReport, StepReport

    def report(own: str, champions: str) -> RunReport:
        def step(name: str, reads: list, writes: list) -> StepReport:
            return StepReport(name, "r", "FINISHED", "", None, 1, {}, {}, reads, writes, "c", "false", None)

        train = step("train_model", [], [DataRef("heldout", own, 45, "u", "heldout")])
        predict = step("predict", [DataRef("heldout", champions, 45, "u", "input")], [])
        return RunReport("p", "k", "FINISHED", "", "local", [], {}, [train, predict])

    a, b = report("aaaa", "aaaa"), report("bbbb", "aaaa")  # b's model lost the gate: predict read a's rows
    assert (a.datasets(), b.datasets()) == ({"heldout": "aaaa"}, {"heldout": "bbbb"})
    assert (a.other_reads(), b.other_reads()) == ({}, {("predict", "heldout"): "aaaa"})


def test_diff_shows_a_dirty_runs_uncommitted_files_but_never_a_secret(story):
    d = json.loads(mlops("diff", story.v2, story.dirty, "--json", root=story.root).output)
    assert d["code"]["commit_a"] == d["code"]["commit_b"] == story.commit_v2
    assert d["code"]["uncommitted_b"] == [FEATURES.as_posix()]
    featurized = next(c for c in d["data"] if c["name"] == "featurized")
    assert featurized["summary"]["columns_added"] == ["sepal_quotient"]
    client = project_client(story.root)
    artifacts = {a.path for a in client.list_artifacts(story.dirty, "mlops")}
    assert artifacts == {"mlops/environment.json", "mlops/code.diff"}
    recorded = json.loads(Path(client.download_artifacts(story.dirty, "mlops/environment.json")).read_text())
    assert recorded["git"]["withheld"] == ["aws-credentials.ini"] and recorded["git"]["untracked"] == []
    diff = Path(client.download_artifacts(story.dirty, "mlops/code.diff")).read_text()
    assert "sepal_quotient" in diff and "do-not-record" not in diff and "credentials" not in diff


# -- reproduce ----------------------------------------------------------------------------------


def test_reproduce_v1_after_v2_matches_its_metrics_and_outputs_from_its_commit(story):
    client = project_client(story.root)
    versions_before = len(client.search_model_versions(f"name='{NAME}'"))
    current = {p.name: p.read_bytes() for p in (story.root / "data" / "datasets").iterdir()}
    forget_package()
    result = mlops("reproduce", story.v1, "--json", root=story.root)
    assert result.exit_code == 0, result.output
    done = json.loads(result.stdout)
    assert done["matched"] and done["commit"] == story.commit_v1 and not done["applied_diff"]
    new = client.get_run(done["run_id"]).data.tags
    assert new["mlops.reproduces"] == story.v1 and new["mlops.git_commit"] == story.commit_v1
    checked = {(c["step"], c["kind"], c["name"]) for c in done["checks"]}
    for step in ("make_data", "feat_data", "train_model", "predict"):
        original = step_run(client, story.v1, step)
        assert all((step, "metric", m) in checked for m in original.data.metrics)
        for tag, snapshot in original.data.tags.items():
            if tag.startswith("mlops.output."):
                name = tag.removeprefix("mlops.output.")
                assert step_run(client, done["run_id"], step).data.tags[tag] == snapshot
                assert (step, "output", name) in checked
    reproduced = step_run(client, done["run_id"], "train_model").data.metrics
    assert reproduced == step_run(client, story.v1, "train_model").data.metrics
    # predict used v1's model, not today's champion
    assert (
        step_run(client, done["run_id"], "predict").data.tags["mlops.model_version"]
        == (step_run(client, story.v1, "predict").data.tags["mlops.model_version"])
    )
    # Nothing registered, no dataset's current version moved.
    assert len(client.search_model_versions(f"name='{NAME}'")) == versions_before
    assert {p.name: p.read_bytes() for p in (story.root / "data" / "datasets").iterdir()} == current
    assert git(story.root, "worktree", "list").count("\n") == 0  # the temporary worktree is gone


def test_reproduce_refuses_a_recorded_diff_changed_in_the_artifact_store(story):
    from urllib.parse import unquote, urlparse

    client = project_client(story.root)
    pipeline = client.get_run(story.dirty)
    steps = client.search_runs([pipeline.info.experiment_id], f"tags.`mlflow.parentRunId` = '{story.dirty}'")
    runs = [pipeline, *steps]
    files = [Path(unquote(urlparse(r.info.artifact_uri).path)) / "mlops" / "code.diff" for r in runs]
    originals = {f: f.read_bytes() for f in files}
    try:
        for f, data in originals.items():  # the same size, other code: what reproduce would run
            f.write_bytes(data.replace(b"sepal_quotient", b"sepal_quotienT"))
        forget_package()
        result = mlops("reproduce", story.dirty, root=story.root)
    finally:
        for f, data in originals.items():
            f.write_bytes(data)
    assert result.exit_code == 2  # an error, not a reproduction that came out different (1)
    assert "its recorded diff (mlops/code.diff) does not match the sha256 taken when the run was made" in result.output
    assert "so it is not applied" in result.output
    assert git(story.root, "worktree", "list").count("\n") == 0


def test_reproduce_a_dirty_run_applies_its_recorded_diff(story):
    forget_package()
    result = mlops("reproduce", story.dirty, "--json", root=story.root)
    assert result.exit_code == 0, result.output
    done = json.loads(result.stdout)
    assert done["applied_diff"] and done["matched"]
    featurized = next(c for c in done["checks"] if c["name"] == "featurized")
    client = project_client(story.root)
    assert featurized["reproduced"] == step_run(client, story.dirty, "feat_data").data.tags["mlops.output.featurized"]
    # Without the diff, the committed code makes another featurized table.
    assert featurized["reproduced"] != step_run(client, story.v2, "feat_data").data.tags["mlops.output.featurized"]


def test_reproduce_reports_a_mismatch_with_exit_1(story, tmp_path):
    """A run whose record says its step made something the code does not make again is not reproduced.

    The record is changed in a copy of the story: the other tests read v2 as it was made.
    """
    root = copy_project(story.root, tmp_path / NAME)
    client = project_client(root)
    make = step_run(client, story.v2, "make_data")
    client.log_metric(make.info.run_id, "rows_dropped", 1.0)  # in the record only: the code logs no such metric
    forget_package()
    result = mlops("reproduce", story.v2, "--step", "make_data", root=root)
    assert result.exit_code == 1, result.output
    assert "mismatch make_data metric rows_dropped: 1 → —" in result.output
    assert "match    make_data output processed" in result.output
    assert "not reproduced: 1 of 2 values match" in result.output


# -- the six questions --------------------------------------------------------------------------


def test_the_six_questions_are_each_answered_by_one_command(story):
    client = project_client(story.root)
    root = story.root
    # 1. Keep track of all experiments and models.
    listed = mlops("runs", "-n", "50", root=root).output
    assert story.v1 in listed and story.v2 in listed and story.dirty in listed
    models = json.loads(mlops("models", "--json", root=root).output)
    assert {m["version"] for m in models} == {str(v.version) for v in client.search_model_versions(f"name='{NAME}'")}
    champion = client.get_model_version_by_alias(NAME, "champion")
    assert next(m for m in models if "champion" in m["aliases"])["run_id"] == champion.run_id
    # 2. Which model was the best?
    best = json.loads(mlops("runs", "--sort", "f1", "-n", "1", "--json", root=root).output)[0]
    trainings = client.search_runs(
        [client.get_experiment_by_name(NAME).experiment_id], "tags.`mlops.step` = 'train_model'"
    )
    assert best["metrics"]["f1"] == max(r.data.metrics["f1"] for r in trainings)
    # 3. Which data made it?
    assert champion.tags["mlops.training_data"] in mlops("show", "champion", root=root).output
    # 4. This model is worse than last one: what was done differently?
    different = mlops("diff", story.v1, story.v2, root=root).output
    assert "max_depth" in different and "petal_sum" in different and story.commit_v2[:12] in different
    # 5. Where is it stored?
    stored = mlops("show", "champion", root=root).output
    assert f"models/{NAME}/v{champion.version}" in stored
    # 6. Why can't we reproduce that model? Re-run its data preparation and compare.
    forget_package()
    again = mlops("reproduce", story.v1, "--step", "feat_data", root=root)
    assert again.exit_code == 0, again.output
    assert "reproduced: " in again.output and "mismatch" not in again.output


# -- reading the store --------------------------------------------------------------------------


def test_the_direct_sqlite_reader_answers_as_mlflow_s_client_does(story, monkeypatch):
    from mlops_template.tracking import reader as store_reader

    questions = [
        ("runs", "-n", "50", "--json"),
        ("runs", "--sort", "f1", "--json"),
        ("runs", "--step", "train_model", "--json"),
        ("show", story.v1, "--json"),
        ("show", "champion", "--json"),
        ("show", story.dirty[:8], "--json"),
        ("diff", story.v1, story.v2, "--json"),
        ("models", "--json"),
    ]
    for args in questions:
        direct = mlops(*args, root=story.root)
        monkeypatch.setattr(store_reader, "DIRECT", False)
        through_mlflow = mlops(*args, root=story.root)
        monkeypatch.setattr(store_reader, "DIRECT", True)
        assert direct.exit_code == 0, direct.output
        assert json.loads(direct.output) == json.loads(through_mlflow.output), args
    assert len(json.loads(mlops("runs", "-n", "50", "--json", root=story.root).output)) >= 3


def test_questions_on_the_local_store_do_not_import_mlflow(story):
    """Importing MLflow takes longer than a question should; the local SQLite store is read without it."""
    script = (
        "import sys\n"
        "from mlops_template.cli.main import main\n"
        f"for args in (['runs'], ['runs', '--sort', 'f1'], ['show', 'champion'], ['diff', {story.v1!r}, {story.v2!r}], ['models']):\n"
        "    main([*args, '--project', sys.argv[1]], standalone_mode=False)\n"
        "print('imported mlflow' if 'mlflow' in sys.modules else 'mlflow not imported')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(story.root)], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    assert story.v2 in done.stdout and "max_depth" in done.stdout  # the questions were answered
    assert done.stdout.rstrip().endswith("mlflow not imported")
