"""Step caching: what reruns a step, what does not, and what a reused step run holds.

Most cases use a three-step project of numbers (load → double → total) whose
outputs follow from their inputs and params, so which steps must run again is
known by construction; each test writes it under its own package name, as
several run in one process. The template's own pipeline shows the four steps
reused with byte-identical outputs, and predict following the champion.
"""

from __future__ import annotations

import itertools
import re
import subprocess
import sys
from pathlib import Path

import duckdb
import pandas as pd
from click.testing import CliRunner
from conftest import project_client

from mlops_template import load_config, read_predictions
from mlops_template.cli.main import main
from mlops_template.data.snapshots import SnapshotStore
from mlops_template.storage.local import LocalStorage

_COUNTER = itertools.count()
STEPS = ("load", "double", "total")

LOAD = """
from mlops_template import StepContext


def load(ctx: StepContext) -> None:
    as_of = ctx.params.get("as_of") or None
    if ctx.params.get("query"):
        df = ctx.read_sql(ctx.params["query"], connection="lake", cache_key=as_of)
    else:
        df = ctx.read_raw()
    ctx.write("loaded", df)
"""
SCALE = '''
def scale(values, factor):
    """Every value times factor."""
    return values * factor
'''
DOUBLE = """
from mlops_template import StepContext

from ..lib.scale import scale


def double(ctx: StepContext) -> None:
    df = ctx.read("loaded")
    df["v"] = scale(df["v"], ctx.params["factor"])
    ctx.write("doubled", df)
"""
TOTAL = """
import pandas as pd
from mlops_template import StepContext


def total(ctx: StepContext) -> None:
    df = ctx.read("doubled")
    ctx.write("total", pd.DataFrame({"sum": [int(df["v"].sum()) + ctx.params["offset"]]}))
"""
MAIN = """
from mlops_template import Pipeline

from .steps.double import double
from .steps.load import load
from .steps.total import total

pipeline = Pipeline([load, double, total])
"""


def numbers_project(tmp_path: Path, extra: str = "") -> Path:
    """The three-step project under a package name of its own, with ten numbers in `data/raw`."""
    package = f"numbers_{next(_COUNTER)}_{tmp_path.name[-8:].replace('-', '_')}"
    root = tmp_path / "numbers"
    src = root / "src" / package
    for folder, files in {
        src: {"main.py": MAIN},
        src / "lib": {"scale.py": SCALE},
        src / "steps": {"load.py": LOAD, "double.py": DOUBLE, "total.py": TOTAL},
    }.items():
        folder.mkdir(parents=True)
        (folder / "__init__.py").write_text("")
        for name, text in files.items():
            (folder / name).write_text(text)
    (root / "data" / "raw").mkdir(parents=True)
    pd.DataFrame({"v": range(10)}).to_csv(root / "data" / "raw" / "numbers.csv", index=False)
    (root / "mlops.toml").write_text(
        f'[project]\nname = "numbers"\npackage = "{package}"\n\n[model]\ngate = {{ min = false }}\n\n'
        '[environments.local]\nstorage = "data"\ntracking_uri = "sqlite:///mlruns.db"\n\n'
        '[steps.load.params]\nas_of = ""\nquery = ""\n\n'
        "[steps.double.params]\nfactor = 2\n\n[steps.total.params]\noffset = 0\n" + extra
    )
    return root


def run(root: Path, *args: str) -> dict[str, str]:
    """`mlops run ARGS` on the project: each step's `ran`, or `cached` with the 8-digit id of the run it reused."""
    result = CliRunner().invoke(main, ["run", "--project", str(root), *args])
    assert result.exit_code == 0, result.output
    found = {}
    for line in result.output.splitlines():
        step = re.match(r"\s+✓ (\w+)\s+[\d.]+ s\s*(.*)$", line)
        if step:
            cached = re.fullmatch(r"cached \(run ([0-9a-f]{8})\)", step.group(2))
            found[step.group(1)] = f"cached {cached.group(1)}" if cached else "ran"
    return found


def ran(outcome: dict[str, str]) -> list[str]:
    return [step for step, what in outcome.items() if what == "ran"]


def total(root: Path) -> int:
    return int(SnapshotStore(LocalStorage(root / "data")).read("total")[1]["sum"].iloc[0])


# -- the numbers project ---------------------------------------------------------------------------


def test_an_unchanged_pipeline_reuses_every_step_and_points_at_the_same_snapshots(tmp_path):
    root = numbers_project(tmp_path)
    assert ran(run(root)) == list(STEPS)
    first = step_runs(root)

    again = run(root)

    assert ran(again) == []
    latest = step_runs(root)
    for step in STEPS:
        source, reused = first[step], latest[step]
        assert again[step] == f"cached {source.info.run_id[:8]}"
        assert reused.data.tags["mlops.cached_from"] == source.info.run_id
        assert reused.info.status == "FINISHED" and reused.info.run_id != source.info.run_id
        outputs = {k: v for k, v in source.data.tags.items() if k.startswith("mlops.output.")}
        assert outputs and {k: reused.data.tags.get(k) for k in outputs} == outputs  # the same ids, nothing copied
        assert [d.dataset.digest for d in reused.inputs.dataset_inputs] == [
            d.dataset.digest for d in source.inputs.dataset_inputs
        ]
    assert total(root) == 90


def test_a_comment_in_a_helper_reruns_the_step_that_imports_it_and_what_it_changed(tmp_path):
    root = numbers_project(tmp_path)
    run(root)
    helper = next((root / "src").glob("*/lib/scale.py"))
    helper.write_text(helper.read_text() + "# a comment changes the bytes, not the result\n")

    again = run(root)

    assert ran(again) == ["double"]  # load imports no helper; total reads the same bytes double wrote again


def test_a_changed_param_reruns_its_step_and_each_later_step_whose_input_changed(tmp_path):
    root = numbers_project(tmp_path)
    run(root)

    assert ran(run(root, "-P", "double.factor=3")) == ["double", "total"]
    assert total(root) == 135
    assert ran(run(root, "-P", "double.factor=3")) == []
    assert ran(run(root, "-P", "total.offset=1")) == ["total"]


def test_new_raw_data_reruns_every_step(tmp_path):
    root = numbers_project(tmp_path)
    run(root)
    pd.DataFrame({"v": range(11)}).to_csv(root / "data" / "raw" / "numbers.csv", index=False)

    assert ran(run(root)) == list(STEPS)
    assert total(root) == 110


def test_raw_data_put_back_reuses_the_first_runs_and_makes_their_outputs_current_again(tmp_path):
    root = numbers_project(tmp_path)
    raw = root / "data" / "raw" / "numbers.csv"
    first_bytes = raw.read_bytes()
    first = run(root)
    pd.DataFrame({"v": range(11)}).to_csv(raw, index=False)
    run(root)
    assert total(root) == 110
    raw.write_bytes(first_bytes)

    again = run(root)

    assert ran(again) == []
    assert total(root) == 90  # the current version is the reused one, as if the steps had run
    assert again.keys() == first.keys()


def test_no_cache_force_step_and_the_settings_run_steps_that_would_be_reused(tmp_path):
    root = numbers_project(tmp_path)
    run(root)

    assert ran(run(root, "--no-cache")) == list(STEPS)
    assert ran(run(root, "--force-step", "double")) == ["double"]
    toml = root / "mlops.toml"
    toml.write_text(
        toml.read_text().replace("[steps.total.params]", "[steps.total]\ncache = false\n\n[steps.total.params]")
    )
    assert ran(run(root)) == ["total"]
    toml.write_text(toml.read_text() + "\n[run]\ncache = false\n")
    assert ran(run(root)) == list(STEPS)


def test_an_unknown_force_step_is_one_line_naming_the_steps(tmp_path):
    root = numbers_project(tmp_path)
    result = CliRunner().invoke(main, ["run", "--project", str(root), "--force-step", "dubble"])
    assert result.exit_code == 1
    assert "Traceback" not in result.output
    assert "unknown step 'dubble'" in result.output and "double" in result.output
    assert not (root / "mlruns.db").exists() or step_runs(root) == {}


def test_a_deleted_snapshot_is_a_miss(tmp_path):
    root = numbers_project(tmp_path)
    run(root)
    doubled = next((root / "data" / "snapshots" / "doubled").glob("*.parquet"))
    doubled.unlink()

    assert ran(run(root)) == ["double"]  # it writes the same bytes again: total reads them and is reused
    assert doubled.is_file()


def test_a_database_read_is_reused_only_under_a_cache_key(tmp_path):
    root = numbers_project(tmp_path, '\n[environments.local.connections]\nlake = "duckdb:///lake.duckdb"\n')
    with duckdb.connect(str(root / "lake.duckdb")) as db:
        db.execute("CREATE TABLE numbers AS SELECT range AS v FROM range(10)")
    (root / "queries").mkdir()
    (root / "queries" / "numbers.sql").write_text("SELECT v FROM numbers ORDER BY v")
    query = ["-P", "load.query=queries/numbers.sql"]

    run(root, *query)
    assert ran(run(root, *query)) == ["load"]  # a live source: read again (the same rows: the rest reused)
    keyed = [*query, "-P", "load.as_of=2026-12-01"]
    assert "load" in ran(run(root, *keyed))
    assert ran(run(root, *keyed)) == []
    (root / "queries" / "numbers.sql").write_text("SELECT v FROM numbers WHERE v > 0 ORDER BY v")
    assert ran(run(root, *keyed)) == list(STEPS)  # the query file changed under the same key


def test_two_runs_at_once_with_one_fingerprint_both_finish_with_valid_outputs(tmp_path):
    root = numbers_project(tmp_path)
    env = {k: v for k, v in __import__("os").environ.items() if not k.startswith(("MLFLOW_", "MLOPS_"))}
    env["MLFLOW_DISABLE_TELEMETRY"] = "true"
    command = [sys.executable, "-m", "mlops_template", "run", "--project", str(root)]
    started = [subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)]
    started.append(subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    done = [p.communicate(timeout=300) for p in started]

    assert [p.returncode for p in started] == [0, 0], done
    client = project_client(root)
    parents = [r for r in client.search_runs(["1"]) if "mlops.step" not in r.data.tags]
    assert len(parents) == 2 and {p.info.status for p in parents} == {"FINISHED"}
    verify = CliRunner().invoke(main, ["data", "verify", "--project", str(root)])
    assert verify.exit_code == 0, verify.output
    assert ran(run(root)) == []  # and either one's attempts serve the next run
    assert total(root) == 90


def step_runs(root: Path) -> dict:
    """The latest attempt of each step, by step name."""
    client = project_client(root)
    runs = client.search_runs(["1"], order_by=["attributes.start_time ASC"])
    return {r.data.tags["mlops.step"]: r for r in runs if "mlops.step" in r.data.tags}


# -- the template's pipeline -----------------------------------------------------------------------


def test_the_template_pipeline_unchanged_is_reused_whole_and_registers_nothing(trained_copy):
    project = trained_copy
    client = project_client(project)
    [original] = [r for r in client.search_runs(["1"]) if "mlops.step" not in r.data.tags]
    firsts = [r for r in client.search_runs(["1"]) if "mlops.step" in r.data.tags]
    versions = client.search_model_versions("name='iris-e2e'")

    outcome = run(project)

    assert ran(outcome) == [] and list(outcome) == ["make_data", "feat_data", "train_model", "predict"]
    assert len(client.search_model_versions("name='iris-e2e'")) == len(versions)
    latest = [r for r in client.search_runs(["1"]) if "mlops.step" not in r.data.tags]
    [new] = [r for r in latest if r.info.run_id != original.info.run_id]
    config = load_config(project)
    before, after = read_predictions(config, original.info.run_id), read_predictions(config, new.info.run_id)
    pd.testing.assert_frame_equal(before, after)
    show = CliRunner().invoke(main, ["show", new.info.run_id, "--project", str(project)])
    assert show.exit_code == 0 and "Traceback" not in show.output
    reused = [line for line in show.output.splitlines() if "reused run" in line]
    assert len(reused) == 4 and all(line.split()[3].rstrip(":") in {r.info.run_id for r in firsts} for line in reused)


def test_predict_runs_again_after_a_promotion_to_a_version_it_never_scored_with(trained_copy):
    project = trained_copy
    toml = project / "mlops.toml"
    text = re.sub(r"gate = \{[^}]*\}", "gate = { min = false, beat_champion = false }", toml.read_text(), count=1)
    toml.write_text(text)  # every trained model is registered and made champion: v2 by construction
    assert ran(run(project, "--step", "train_model", "-P", "train_model.max_iter=5")) == ["train_model"]
    assert CliRunner().invoke(main, ["promote", "1", "--project", str(project)]).exit_code == 0

    assert ran(run(project, "--step", "predict")) == []  # v1 again: its predictions are those v1 made
    assert CliRunner().invoke(main, ["promote", "2", "--project", str(project)]).exit_code == 0
    assert ran(run(project, "--step", "predict")) == ["predict"]
    assert ran(run(project, "--step", "predict")) == []
