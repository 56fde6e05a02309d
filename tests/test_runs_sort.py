"""`mlops runs` sorting and filters, run names, and the bad input `show`/`diff`/`reproduce` refuse.

A history of pipeline runs is written straight through the MLflow client (a parent run per
pipeline run, a child per step, the training child with its metrics), as the runner records them,
so these tests need no training.
"""

from __future__ import annotations

import json
import random
import sqlite3
import subprocess
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import store_client

from mlops_template.cli.main import main

STEPS = ("make_data", "feat_data", "train_model", "predict")


@dataclass
class History:
    root: Path
    uri: str
    experiment_id: str
    runs: list[dict]  # oldest first: run_id, f1, status, steps, children


def project(root: Path, name: str) -> str:
    root.mkdir(parents=True)
    uri = f"sqlite:///{root / 'mlruns.db'}"
    (root / "mlops.toml").write_text(
        f'[project]\nname = "{name}"\npackage = "{name.replace("-", "_")}"\n\n'
        "[model]\ngate = { min = false }\n\n"
        f'[environments.local]\nstorage = "data"\ntracking_uri = "{uri}"\n',
        encoding="utf-8",
    )
    subprocess.run(["git", "init", "-q", "--initial-branch=main"], cwd=root, check=True)
    subprocess.run(
        ["git", "-c", "user.email=t@example.com", "-c", "user.name=t", "commit", "-q", "--allow-empty", "-m", "start"],
        cwd=root,
        check=True,
    )
    return uri


def add_run(client, experiment_id: str, started: int, *, f1: float | None, steps=STEPS, status="FINISHED", tags=None):
    parent = client.create_run(
        experiment_id,
        start_time=started,
        tags={
            "mlops.steps": ",".join(steps),
            "mlops.pipeline_run": f"k{started}",
            "mlops.environment": "local",
            "mlops.git_commit": "0" * 40,
            "mlops.git_dirty": "false",
            **(tags or {}),
        },
    ).info.run_id
    children = {}
    for i, step in enumerate(steps):
        child = client.create_run(
            experiment_id,
            start_time=started + i + 1,
            tags={
                "mlflow.parentRunId": parent,
                "mlops.step": step,
                "mlops.git_commit": "0" * 40,
                "mlops.git_dirty": "false",
                **(tags or {}),
            },
        ).info.run_id
        if step == "train_model" and f1 is not None:
            client.log_metric(child, "f1", f1)
        client.set_terminated(child, status)
        children[step] = child
    client.set_terminated(parent, status)
    return {"run_id": parent, "f1": f1, "status": status, "steps": steps, "children": children}


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> History:
    """26 pipeline runs of project `sorted`, shared by the tests that only read them; a test that adds runs takes `lone`."""
    root = tmp_path_factory.mktemp("history") / "sorted"
    uri = project(root, "sorted")
    client = store_client(uri)
    experiment_id = client.create_experiment("sorted")
    rng = random.Random(7)
    runs = [add_run(client, experiment_id, 1_700_000_000_000, f1=0.99)]  # the best is the oldest
    for i in range(1, 25):
        status = "FAILED" if i % 6 == 0 else "FINISHED"
        steps = STEPS if i % 4 else STEPS[:3]
        runs.append(
            add_run(
                client,
                experiment_id,
                1_700_000_000_000 + i * 1000,
                f1=rng.uniform(0.5, 0.95),
                steps=steps,
                status=status,
            )
        )
    runs.append(add_run(client, experiment_id, 1_700_000_100_000, f1=None, steps=STEPS[:2]))  # no training
    return History(root, uri, experiment_id, runs)


@pytest.fixture(autouse=True)
def _no_redirects(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("MLOPS_ENVIRONMENT", "MLOPS_STORAGE", "MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "MLFLOW_RUN_ID"):
        monkeypatch.delenv(var, raising=False)


def mlops(history: History, *args: str):
    return CliRunner().invoke(main, [*args, "--project", str(history.root)])


def listed(history: History, *args: str) -> list[dict]:
    result = mlops(history, "runs", "--json", *args)
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


# -- runs ---------------------------------------------------------------------------------------


def test_sort_orders_every_run_then_limits_so_the_best_comes_first(history):
    found = listed(history, "--sort", "f1", "-n", "5")
    best = sorted((r for r in history.runs if r["f1"] is not None), key=lambda r: -r["f1"])[:5]
    assert [r["run_id"] for r in found] == [r["run_id"] for r in best]
    assert found[0]["run_id"] == history.runs[0]["run_id"]  # the oldest of 26, beyond any newest-first limit
    assert [r["metrics"]["f1"] for r in found] == sorted((r["metrics"]["f1"] for r in found), reverse=True)


def test_runs_without_the_metric_sort_last(history):
    found = listed(history, "--sort", "f1", "-n", "100")
    assert len(found) == len(history.runs)
    assert found[-1]["run_id"] == history.runs[-1]["run_id"] and found[-1]["metrics"] == {}


def test_an_error_metric_sorts_lowest_first(history):
    from mlops_template.config.metrics import higher_is_better

    assert not higher_is_better("rmse") and not higher_is_better("mae") and higher_is_better("f1")
    assert higher_is_better("neg_root_mean_squared_error")


def test_sort_by_rmse_puts_the_smallest_error_first_and_runs_without_it_last():
    from datetime import UTC, datetime

    from mlops_template.lineage.listing import PipelineRun, sort_runs

    def run(key: str, day: int, **metrics: float) -> PipelineRun:
        started = datetime(2026, 1, day, tzinfo=UTC)
        return PipelineRun(key, key, started, "FINISHED", "local", [], "0" * 40, "false", metrics=metrics)

    runs = [run("a", 1, rmse=0.9), run("b", 2, rmse=0.2), run("c", 3), run("d", 4, rmse=0.5, f1=0.1)]
    assert [r.key for r in sort_runs(runs, "rmse")] == ["b", "d", "a", "c"]
    assert [r.key for r in sort_runs(runs, "f1")] == ["d", "c", "b", "a"]


def test_default_is_newest_first_limited(history):
    found = listed(history, "-n", "3")
    assert [r["run_id"] for r in found] == [r["run_id"] for r in history.runs[::-1][:3]]


def test_status_and_step_filters(history):
    failed = listed(history, "--status", "failed", "-n", "100")
    assert {r["run_id"] for r in failed} == {r["run_id"] for r in history.runs if r["status"] == "FAILED"}
    with_predict = listed(history, "--step", "predict", "-n", "100")
    assert {r["run_id"] for r in with_predict} == {r["run_id"] for r in history.runs if "predict" in r["steps"]}
    both = listed(history, "--step", "predict", "--status", "FINISHED", "--sort", "f1", "-n", "100")
    assert all(r["status"] == "FINISHED" and "predict" in r["steps"] for r in both) and both


def test_an_unknown_status_is_one_line_with_the_choices(history):
    result = mlops(history, "runs", "--status", "DONE")
    assert result.exit_code == 1
    assert "run status 'DONE' is unknown" in result.output and "FINISHED" in result.output


# -- names --------------------------------------------------------------------------------------


def test_a_step_run_is_shown_within_its_pipeline_run(history):
    run = history.runs[3]
    result = mlops(history, "show", run["children"]["feat_data"][:10], "--json")
    assert result.exit_code == 0, result.output
    shown = json.loads(result.output)
    assert shown["run_id"] == run["run_id"] and shown["selected_step"] == "feat_data"
    assert [s["name"] for s in shown["steps"]] == list(run["steps"])


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("abc", "is too short to name a run; give at least 6 characters"),
        ("ffffffffff", "has no run 'ffffffffff'"),
        ("last-week", "is not a run id"),
        ("champion", "has no champion yet"),
    ],
)
def test_show_refuses_a_bad_name_with_one_line_and_exit_2(history, name, message):
    result = mlops(history, "show", name)
    assert result.exit_code == 2
    assert message in result.output and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_an_ambiguous_prefix_lists_the_candidates(tmp_path):
    uri = project(tmp_path / "amb", "amb")
    client = store_client(uri)
    experiment_id = client.create_experiment("amb")
    ids = [add_run(client, experiment_id, 1_700_000_000_000 + i, f1=0.9)["run_id"] for i in range(2)]
    wanted = ["abcdef" + "0" * 25 + str(i) for i in range(2)]
    with closing(sqlite3.connect(tmp_path / "amb" / "mlruns.db")) as db, db:
        for old, new in zip(ids, wanted, strict=True):
            for table in ("runs", "tags", "metrics", "latest_metrics", "params"):
                db.execute(f"UPDATE {table} SET run_uuid = ? WHERE run_uuid = ?", (new, old))
            db.execute("UPDATE tags SET value = ? WHERE key = 'mlflow.parentRunId' AND value = ?", (new, old))
    result = CliRunner().invoke(main, ["diff", "abcdef", wanted[1], "--project", str(tmp_path / "amb")])
    assert result.exit_code == 2
    assert "run 'abcdef' is ambiguous" in result.output
    assert all(f"{w} (pipeline run)" in result.output for w in wanted)


def test_a_run_of_another_project_is_named_as_such(lone):
    client = store_client(lone.uri)
    add_run(client, lone.experiment_id, 1_700_000_000_000, f1=0.9)  # the project's own run beside it
    other = client.create_experiment("someone-else")
    foreign = add_run(client, other, 1_700_000_000_000, f1=0.5)["run_id"]
    result = mlops(lone, "show", foreign)
    assert result.exit_code == 2
    assert f"run '{foreign}' belongs to experiment 'someone-else', not to project 'lone'" in result.output


# -- reproduce: refused before anything is written ----------------------------------------------


def run_count(history: History) -> int:
    return len(store_client(history.uri).search_runs([history.experiment_id], max_results=1000))


def refused(history: History, *args: str) -> str:
    before = run_count(history)
    result = mlops(history, "reproduce", *args)
    assert result.exit_code == 2, result.output
    assert run_count(history) == before  # nothing written
    worktrees = subprocess.run(["git", "worktree", "list"], cwd=history.root, capture_output=True, text=True)
    assert len(worktrees.stdout.strip().splitlines()) == 1
    return result.output


@pytest.fixture
def lone(tmp_path: Path) -> History:
    """A project of its own, for tests that add runs."""
    uri = project(tmp_path / "lone", "lone")
    return History(tmp_path / "lone", uri, store_client(uri).create_experiment("lone"), [])


def test_reproduce_refuses_a_run_made_outside_a_git_repository(lone):
    client = store_client(lone.uri)
    run = add_run(client, lone.experiment_id, 1_600_000_000_000, f1=0.7, tags={"mlops.git_commit": "none"})
    assert "was made outside a git repository (mlops.git_commit=none)" in refused(lone, run["run_id"])


def test_reproduce_refuses_a_commit_no_longer_in_the_repository(history):
    out = refused(history, history.runs[1]["run_id"])
    assert "commit 000000000000 of run" in out and "is no longer in the repository" in out


def test_reproduce_refuses_a_snapshot_missing_from_storage(lone):
    from mlflow.entities import Dataset, DatasetInput, InputTag

    client = store_client(lone.uri)
    run = add_run(client, lone.experiment_id, 1_600_000_001_000, f1=0.7)
    source = json.dumps({"uri": str(lone.root / "data/snapshots/raw/1234abcd1234abcd.parquet")})
    dataset = Dataset(name="raw", digest="1234abcd1234abcd", source_type="local", source=source)
    client.log_inputs(
        run["children"]["make_data"], [DatasetInput(dataset, tags=[InputTag("mlflow.data.context", "input")])]
    )
    out = refused(lone, run["run_id"], "--step", "make_data")
    assert "snapshot raw:1234abcd1234abcd, which step 'make_data' of run" in out and "is missing from storage" in out


def test_reproduce_refuses_a_damaged_snapshot_before_it_creates_a_run(lone):
    import pandas as pd
    from mlflow.entities import Dataset, DatasetInput, InputTag

    from mlops_template.data.snapshots import SnapshotStore
    from mlops_template.storage.local import LocalStorage

    store = SnapshotStore(LocalStorage(lone.root / "data"))
    snapshot = store.write_table("raw", pd.DataFrame({"x": [1, 2, 3]})).snapshot
    client = store_client(lone.uri)
    run = add_run(client, lone.experiment_id, 1_600_000_002_000, f1=0.7)
    source = json.dumps({"uri": store.uri(snapshot)})
    dataset = Dataset(name="raw", digest=snapshot.id, source_type="local", source=source)
    client.log_inputs(
        run["children"]["make_data"], [DatasetInput(dataset, tags=[InputTag("mlflow.data.context", "input")])]
    )
    stored = lone.root / "data" / snapshot.key
    stored.write_bytes(stored.read_bytes()[:-8] + b"00000000")

    out = refused(lone, run["run_id"], "--step", "make_data")  # refused: exit 2, no run added
    assert f"snapshot {snapshot.ref}, which step 'make_data' of run" in out and "no longer matches its id" in out
    assert "mlops data verify raw --repair" in out


def test_reproduce_refuses_an_unknown_step_and_a_negative_tolerance(history):
    run = history.runs[2]["run_id"]
    assert "has no step 'train'" in refused(history, run, "--step", "train")
    assert "--tolerance -1.0 is not a number ≥ 0" in refused(history, run, "--tolerance", "-1")
