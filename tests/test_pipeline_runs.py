"""One pipeline run across processes: keys, one parent whoever comes first, run-scoped reads, lost attempts.

Every process here is a real `mlops run` (or a forked process calling the
library) against a real SQLite store and a local storage folder.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

from conftest import store_client

from mlops_template.config.load import load_config
from mlops_template.pipeline.coordination import open_parent, record_key
from mlops_template.pipeline.loader import load_pipeline
from mlops_template.scaffold.new import new_project
from mlops_template.storage import open_storage
from mlops_template.tracking.connect import connect
from mlops_template.tracking.tags import TAG_LOST, TAG_OUTPUT_PREFIX, TAG_PIPELINE_RUN

STEPS = ["make_data", "feat_data", "train_model", "predict"]


def mlops(project: Path, *args: str, env: dict[str, str] | None = None, timeout: float = 300):
    """`mlops ARGS` in the project folder, as a user types it."""
    return subprocess.run(
        [sys.executable, "-m", "mlops_template", *args],
        cwd=project,
        env=_env(env),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLOPS_", "MLFLOW_TRACKING", "MLFLOW_RUN"))}
    return {**env, "MLFLOW_DISABLE_TELEMETRY": "true", **(extra or {})}


def runs_of(project: Path):
    """(parents, children) of the project's experiment, deleted runs left out."""
    config = load_config(project)
    client = store_client(config.environment("local").tracking_uri)
    experiment = client.get_experiment_by_name(config.name)
    runs = client.search_runs([experiment.experiment_id], max_results=1000) if experiment else []
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    return parents, children


def outputs(run) -> dict[str, str]:
    return {k.removeprefix(TAG_OUTPUT_PREFIX): v for k, v in run.data.tags.items() if k.startswith(TAG_OUTPUT_PREFIX)}


def reads(run) -> dict[str, str]:
    """The snapshots a step attempt read: its MLflow inputs other than what it wrote."""
    written = outputs(run)
    return {
        d.dataset.name: d.dataset.digest
        for d in run.inputs.dataset_inputs
        if d.dataset.name not in written and d.dataset.name != "predictions"
    }


def test_four_step_processes_with_one_key_make_one_pipeline_run_like_one_process(trained_project, trained_copy):
    project = trained_copy
    key = "nightly-2026-11-26"
    statuses = []
    for step in STEPS:
        done = mlops(project, "run", "--step", step, "--pipeline-run", key, "--no-cache")  # each does its work
        assert done.returncode == 0, done.stderr
        assert f"key {key}" in done.stdout
        parents, _ = runs_of(project)
        statuses.append(next(p.info.status for p in parents if p.data.tags.get(TAG_PIPELINE_RUN) == key))
    assert statuses == ["RUNNING", "RUNNING", "RUNNING", "FINISHED"]

    parents, children = runs_of(project)
    keyed = [p for p in parents if p.data.tags.get(TAG_PIPELINE_RUN) == key]
    assert len(keyed) == 1
    assert keyed[0].data.tags["mlops.steps"] == ",".join(STEPS)
    mine = [c for c in children if c.data.tags["mlflow.parentRunId"] == keyed[0].info.run_id]
    assert sorted(c.data.tags["mlops.step"] for c in mine) == sorted(STEPS)
    assert all(c.info.status == "FINISHED" for c in mine)

    # The same snapshots as the one-process `mlops run` that trained the original project.
    original = [p for p in parents if p.info.run_id != keyed[0].info.run_id]
    assert len(original) == 1
    first = {
        c.data.tags["mlops.step"]: c for c in children if c.data.tags["mlflow.parentRunId"] == original[0].info.run_id
    }
    for child in mine:
        step = child.data.tags["mlops.step"]
        assert outputs(child) == outputs(first[step]), step
        assert reads(child) == reads(first[step]), step
    assert (project / "data" / "predictions" / f"{keyed[0].info.run_id}.parquet").is_file()


def cli(project: Path, *args: str, env: dict[str, str] | None = None):
    """`mlops ARGS` in this process (CliRunner): for checks of what a command says, without a new interpreter."""
    from click.testing import CliRunner

    from mlops_template.cli.main import main

    return CliRunner().invoke(main, [*args[:1], "--project", str(project), *args[1:]], env=env)


def test_a_key_is_checked_and_a_plan_stands_once_recorded(trained_copy):
    bad = cli(trained_copy, "run", "--step", "make_data", "--pipeline-run", "a/b")
    assert bad.exit_code == 1
    assert "pipeline run key 'a/b' is not valid" in bad.output and "Traceback" not in bad.output

    first = cli(trained_copy, "run", "--step", "make_data", "--pipeline-run", "k1", "--plan", "make_data,feat_data")
    assert first.exit_code == 0, first.output
    other = cli(trained_copy, "run", "--step", "feat_data", "--pipeline-run", "k1", "--plan", "feat_data")
    assert other.exit_code == 1
    assert "pipeline run 'k1' was planned as make_data,feat_data, not feat_data" in other.output
    outside = cli(trained_copy, "run", "--step", "predict", "--pipeline-run", "k1")
    assert outside.exit_code == 1
    assert "pipeline run 'k1' plans make_data,feat_data; step predict is not in it" in outside.output
    # Through the variable, as a pod gets it; the plan recorded by the first process stands.
    last = cli(trained_copy, "run", "--step", "feat_data", env={"MLOPS_PIPELINE_RUN": "k1"})
    assert last.exit_code == 0, last.output
    assert "(joined, key k1)" in last.output
    parents, _ = runs_of(trained_copy)
    keyed = [p for p in parents if p.data.tags.get(TAG_PIPELINE_RUN) == "k1"]
    assert [p.info.status for p in keyed] == ["FINISHED"]


def _open_at_barrier(project: str, key: str, barrier, results) -> None:
    """In a forked process: reach the store, wait for the others, then open the key's pipeline run."""
    import mlflow

    config = load_config(project)
    env = config.environment("local")
    experiment_id = connect(config, env)
    storage = open_storage(env)
    client = mlflow.MlflowClient()
    barrier.wait(timeout=60)
    parent = open_parent(client, storage, experiment_id, key, plan=STEPS, plan_given=False, tags={})
    results.put(parent.run_id)


def test_same_key_started_at_once_makes_one_parent_every_time(tmp_path, monkeypatch):
    project = new_project("racers", directory=tmp_path / "racers", lock=False)
    monkeypatch.chdir(project)
    context = multiprocessing.get_context("fork")
    for attempt in range(10):
        key = f"race-{attempt}"
        barrier, results = context.Barrier(3), context.Queue()
        processes = [
            context.Process(target=_open_at_barrier, args=(str(project), key, barrier, results)) for _ in range(3)
        ]
        for p in processes:
            p.start()
        for p in processes:
            p.join(timeout=120)
        assert [p.exitcode for p in processes] == [0, 0, 0]
        joined = {results.get(timeout=5) for _ in processes}
        parents, _ = runs_of(project)
        keyed = [p.info.run_id for p in parents if p.data.tags.get(TAG_PIPELINE_RUN) == key]
        assert len(joined) == 1 and keyed == list(joined), attempt
    record = Path(load_config(project).environment("local").storage, record_key("race-9"))
    assert record.is_file()


def _featurize_by_batch(project: Path) -> None:
    """Make each pipeline's `featurized` its own: a column from the BATCH variable (the team's code may do anything)."""
    features = next(project.glob("src/*/features/build_features.py"))
    features.write_text(
        features.read_text()
        + textwrap.dedent(
            """
            def feat_data(ctx):
                import os

                df = add_features(ctx.read("processed"))
                ctx.write("featurized", df.assign(batch=int(os.environ["BATCH"])))
            """
        )
    )
    main = next(project.glob("src/*/main.py"))
    assert "feat_data" in main.read_text()


def test_pipelines_started_together_on_a_fresh_project_all_succeed_and_read_only_their_own_data(tmp_path):
    project = new_project("crowd", directory=tmp_path / "crowd", lock=False)
    _featurize_by_batch(project)
    assert not (project / "mlruns.db").exists()
    started = [
        subprocess.Popen(
            [sys.executable, "-m", "mlops_template", "run", "-P", f"seed={n}", "--no-cache"],  # BATCH: not in a key
            cwd=project,
            env=_env({"BATCH": str(n)}),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for n in (1, 2, 3)
    ]
    finished = [p.communicate(timeout=600) for p in started]
    assert [p.returncode for p in started] == [0, 0, 0], [err for _, err in finished]

    parents, children = runs_of(project)
    assert len(parents) == 3 and all(p.info.status == "FINISHED" for p in parents)
    batches = set()
    for parent in parents:
        mine = [c for c in children if c.data.tags["mlflow.parentRunId"] == parent.info.run_id]
        assert sorted(c.data.tags["mlops.step"] for c in mine) == sorted(STEPS)
        written = {name: sid for c in mine for name, sid in outputs(c).items()}
        for child in mine:
            for name, snapshot in reads(child).items():
                if (child.data.tags["mlops.step"], name) == ("predict", "heldout"):
                    continue  # read by id: the champion's held-out rows, whichever run made them
                assert snapshot == written[name], (child.data.tags["mlops.step"], name)
        batches.add(written["featurized"])
    assert len(batches) == 3  # each pipeline's featurized differed, and each trained on its own


TINY_STEPS = """
import os
import time

import pandas as pd

from mlops_template import Pipeline


def make(ctx):
    ctx.write("numbers", pd.DataFrame({"x": range(int(os.environ.get("ROWS", "5")))}))


def slow(ctx):
    df = ctx.read("numbers")
    ctx.log.info("read %d rows", len(df))
    while os.path.exists(os.environ["HOLD"]):
        time.sleep(0.1)
    ctx.write("total", pd.DataFrame({"sum": [df.x.sum()]}))


pipeline = Pipeline([make, slow])
"""


def with_steps(project: Path, code: str) -> None:
    """Give the project a package of its own (a fresh name: this process imports it too) holding `code` as main."""
    package = f"tiny_{uuid.uuid4().hex[:8]}"
    config = project / "mlops.toml"
    config.write_text(config.read_text().replace('package = "tiny"', f'package = "{package}"'))
    (project / "src" / package).mkdir(parents=True)
    (project / "src" / package / "main.py").write_text(code)


def _wait_for(predicate, timeout: float = 60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = predicate()
        if found:
            return found
        time.sleep(0.2)
    raise AssertionError("timed out")


def test_a_killed_attempt_is_failed_by_the_next_one_only_once_its_lease_lapsed(tiny_project, tmp_path, monkeypatch):
    with_steps(tiny_project, TINY_STEPS)
    hold = tmp_path / "hold"
    key = "retry-me"
    env = {"HOLD": str(hold), "MLOPS_STEP_LEASE": "2"}
    monkeypatch.setenv("MLOPS_STEP_LEASE", "2")
    pipeline = load_pipeline(load_config(tiny_project))
    pipeline.run(project=tiny_project, steps=["make"], pipeline_run=key)

    def attempts():
        _, children = runs_of(tiny_project)
        return sorted((c for c in children if c.data.tags["mlops.step"] == "slow"), key=lambda c: c.info.start_time)

    def start_slow():
        return subprocess.Popen(
            [sys.executable, "-m", "mlops_template", "run", "--step", "slow", "--pipeline-run", key],
            cwd=tiny_project,
            env=_env(env),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    hold.touch()
    first = start_slow()
    _wait_for(lambda: [a for a in attempts() if a.data.tags.get("mlops.data.numbers")])
    time.sleep(4)  # twice the lease: only the heartbeat keeps the first attempt alive now
    # A second attempt while the first lives: the first is left alone.
    hold.unlink()
    hold.touch()
    second = start_slow()
    _wait_for(lambda: len([a for a in attempts() if a.data.tags.get("mlops.data.numbers")]) == 2)
    assert [a.info.status for a in attempts()] == ["RUNNING", "RUNNING"]
    assert TAG_LOST not in attempts()[0].data.tags

    # Both are killed with no chance to clean up; the current `numbers` changes meanwhile.
    first.send_signal(signal.SIGKILL)
    second.send_signal(signal.SIGKILL)
    first.wait(), second.wait()
    monkeypatch.setenv("ROWS", "9")
    pipeline.run(project=tiny_project, steps=["make"])
    time.sleep(2.5)  # the lease lapses
    hold.unlink()
    monkeypatch.setenv("HOLD", str(hold))
    retry = pipeline.run(project=tiny_project, steps=["slow"], pipeline_run=key)
    assert retry.status == "FINISHED" and retry.joined

    killed_1, killed_2, last = attempts()
    assert [killed_1.info.status, killed_2.info.status, last.info.status] == ["FAILED", "FAILED", "FINISHED"]
    assert "no heartbeat" in killed_1.data.tags[TAG_LOST] and last.info.run_id in killed_1.data.tags[TAG_LOST]
    # Every attempt read the bytes the pipeline run's own `make` wrote, not the newer current version.
    assert killed_1.data.tags["mlops.data.numbers"] == last.data.tags["mlops.data.numbers"]
    parents, _ = runs_of(tiny_project)
    keyed = next(p for p in parents if p.data.tags.get(TAG_PIPELINE_RUN) == key)
    assert keyed.info.status == "FINISHED"
    make_runs = [c for c in runs_of(tiny_project)[1] if c.data.tags["mlflow.parentRunId"] == keyed.info.run_id]
    assert {outputs(c).get("numbers") for c in make_runs if c.data.tags["mlops.step"] == "make"} == {
        last.data.tags["mlops.data.numbers"]
    }


def test_a_retry_reads_the_raw_files_its_pipeline_run_read_first(tiny_project, tmp_path):
    with_steps(
        tiny_project,
        textwrap.dedent(
            """
            from mlops_template import Pipeline


            def make(ctx):
                ctx.write("numbers", ctx.read_raw())


            pipeline = Pipeline([make])
            """
        ),
    )
    raw = tmp_path / "storage" / "raw"
    raw.mkdir(parents=True)
    (raw / "a.csv").write_text("x\n1\n2\n")
    pipeline = load_pipeline(load_config(tiny_project))
    assert not pipeline.run(project=tiny_project, pipeline_run="raw-key").joined
    (raw / "a.csv").write_text("x\n1\n2\n3\n")  # the raw files change before a retry
    assert pipeline.run(project=tiny_project, pipeline_run="raw-key").joined
    pipeline.run(project=tiny_project)

    _, children = runs_of(tiny_project)
    keyed, fresh = [], []
    for child in sorted(children, key=lambda c: c.info.start_time):
        (keyed if len(keyed) < 2 else fresh).append(child.data.tags["mlops.data.raw"])
    assert keyed[0] == keyed[1]  # the retry read what the first attempt read
    assert fresh[0] != keyed[0]  # a new pipeline run reads raw/ as it is now


def test_a_stopped_step_process_marks_its_attempt_and_the_pipeline_run_failed(tiny_project, tmp_path):
    with_steps(tiny_project, TINY_STEPS)
    hold = tmp_path / "hold"
    hold.touch()
    env = {"HOLD": str(hold)}
    assert mlops(tiny_project, "run", "--step", "make", "--pipeline-run", "stop-me", env=env).returncode == 0
    step = subprocess.Popen(
        [sys.executable, "-m", "mlops_template", "run", "--step", "slow", "--pipeline-run", "stop-me"],
        cwd=tiny_project,
        env=_env(env),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    _wait_for(
        lambda: [
            c
            for c in runs_of(tiny_project)[1]
            if c.data.tags["mlops.step"] == "slow" and c.data.tags.get("mlops.data.numbers")
        ]
    )
    step.send_signal(signal.SIGTERM)  # what Kubernetes sends a pod it stops
    _, err = step.communicate(timeout=60)
    assert step.returncode == 128 + signal.SIGTERM
    assert "Traceback" not in err
    parents, children = runs_of(tiny_project)
    slow = [c for c in children if c.data.tags["mlops.step"] == "slow"]
    assert [c.info.status for c in slow] == ["FAILED"]
    assert [p.info.status for p in parents] == ["FAILED"]
