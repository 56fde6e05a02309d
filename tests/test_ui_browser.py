"""`mlops ui` in a browser: what a team looks for after two pipeline runs, checked against the store.

Playwright drives the distribution's Chromium (`scripts/debian_packages.sh` installs it) headless, on the
MLflow UI that `mlops ui` serves for a project whose store holds two pipeline runs: the first passed the
gate and made v1 champion, the second ran every step again and was refused. Each check compares the page
with what the project's own store says. Screenshots of the pages go to `.test-artifacts/ui/` at the
repository's root (ignored by git), replaced on every run.
"""

from __future__ import annotations

import os
import re
import shutil
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import TRAINED_NAME, copy_project, project_client
from playwright.sync_api import Browser, Locator, Page, expect, sync_playwright
from ui_process import running_ui

from mlops_template.cli.main import main

pytestmark = [
    pytest.mark.browser,
    pytest.mark.xdist_group("ui_browser"),  # one worker runs the module: one second run, one server, one browser
]

SCREENSHOTS = Path(__file__).resolve().parents[1] / ".test-artifacts" / "ui"
STEPS = {"make_data", "feat_data", "train_model", "predict"}
_WAIT_MS = 60_000  # a hang guard: a loaded machine takes seconds to serve and render MLflow's bundle


@dataclass(frozen=True)
class PipelineRun:
    id: str
    name: str
    steps: dict[str, str]  # step run id → step name

    def step_id(self, step: str) -> str:
        return next(run_id for run_id, name in self.steps.items() if name == step)


@dataclass(frozen=True)
class Store:
    """What the project's tracking store and registry hold: the truth the pages are compared with."""

    experiment_id: str
    first: PipelineRun
    second: PipelineRun
    model: str
    champion: str  # the version the alias names
    champion_run: str  # the training run it was registered from


@pytest.fixture(scope="module")
def project(trained_project, tmp_path_factory) -> Path:
    """A copy of the trained project after a second `mlops run --no-cache`: every step ran twice."""
    root = copy_project(trained_project.root, tmp_path_factory.mktemp("ui-browser") / TRAINED_NAME)
    with pytest.MonkeyPatch.context() as mp:
        for var in [v for v in os.environ if v.startswith(("MLOPS_", "MLFLOW_")) and v != "MLFLOW_DISABLE_TELEMETRY"]:
            mp.delenv(var)
        result = CliRunner().invoke(main, ["run", "--project", str(root), "--no-cache"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return root


@pytest.fixture(scope="module")
def store(project) -> Store:
    """Read the project's store once; its shape (two pipeline runs of four fresh steps, one champion) is checked."""
    client = project_client(project)
    experiment_id = client.get_experiment_by_name(TRAINED_NAME).experiment_id
    runs = client.search_runs([experiment_id], order_by=["attributes.start_time ASC"])
    pipelines = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert len(pipelines) == 2, [r.info.run_name for r in runs]
    found = []
    for pipeline in pipelines:
        steps = {
            r.info.run_id: r.data.tags["mlops.step"]
            for r in runs
            if r.data.tags.get("mlflow.parentRunId") == pipeline.info.run_id
        }
        assert sorted(steps.values()) == sorted(STEPS)
        found.append(PipelineRun(pipeline.info.run_id, pipeline.info.run_name, steps))
    first, second = found
    assert not any("mlops.cached_from" in r.data.tags for r in runs if r.info.run_id in second.steps)  # ran again
    (model,) = client.search_registered_models()
    champion = client.get_model_version_by_alias(model.name, "champion")
    return Store(experiment_id, first, second, model.name, champion.version, champion.run_id)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Headless Chromium from the distribution (Playwright's own browser download is not used)."""
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.skip("no `chromium` on PATH: `bash scripts/debian_packages.sh` installs it")
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    for old in SCREENSHOTS.glob("*.png"):
        old.unlink()
    print(f"screenshots: {SCREENSHOTS}")
    expect.set_options(timeout=_WAIT_MS)  # Playwright's own default (5 s) is short for a loaded machine
    with sync_playwright() as playwright:
        # Root cannot start Chromium's sandbox; the only pages it opens are this test's, on loopback.
        browser = playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox"], timeout=_WAIT_MS)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture(scope="module")
def ui(browser, project, tmp_path_factory) -> Iterator[str]:
    """The base URL of `mlops ui` on the project, stopped after the module."""
    with running_ui(project, tmp_path_factory.mktemp("ui-browser-log") / "ui.log") as (base, _):
        yield base


@pytest.fixture
def page(browser, ui, request) -> Iterator[Page]:
    """A fresh browser context per test; the page as the test left it is saved as `<test name>.png`."""
    context = browser.new_context(viewport={"width": 1600, "height": 1000}, base_url=ui)
    context.set_default_timeout(_WAIT_MS)
    # MLflow opens its assistant panel on a first visit, over a third of the page: count this as a later one.
    context.add_init_script("localStorage.setItem('mlflow.assistant.fab.autoOpenedOnFirstLoad_v1', 'true')")
    page = context.new_page()
    try:
        yield page
    finally:
        _screenshot(page, request.node.name)
        context.close()


def _screenshot(page: Page, name: str) -> None:
    page.screenshot(path=SCREENSHOTS / f"{name}.png", full_page=True)


def _open(page: Page, route: str, *, until: Locator) -> None:
    """Open a route of the single-page app and wait until `until` is visible."""
    page.goto(f"/#/{route}")
    expect(until).to_be_visible()


def _run_link(page: Page, store: Store, run_id: str) -> Locator:
    return page.locator(f'a[href="#/experiments/{store.experiment_id}/runs/{run_id}"]')


def _row_index(page: Page, run_id: str) -> int:
    return int(page.locator(f'div.ag-row[row-id="{run_id}"]').first.get_attribute("row-index"))


def test_runs_table_nests_the_four_step_runs_under_each_pipeline_run(page, store):
    first, second = store.first, store.second
    _open(page, f"experiments/{store.experiment_id}/runs", until=_run_link(page, store, first.id))
    for pipeline in (first, second):
        expect(_run_link(page, store, pipeline.id)).to_have_text(pipeline.name)
        for step_id in pipeline.steps:  # collapsed: the steps are not rows of their own
            expect(_run_link(page, store, step_id)).to_have_count(0)

    for expanded, collapsed in ((first, second), (second, None)):
        row = page.get_by_role("row").filter(has=_run_link(page, store, expanded.id))
        row.get_by_role("button").first.click()  # the expander in the run-name cell
        for step_id, step in expanded.steps.items():
            expect(_run_link(page, store, step_id)).to_have_text(step)
        if collapsed:
            for step_id in collapsed.steps:
                expect(_run_link(page, store, step_id)).to_have_count(0)
        # The step rows follow their pipeline run's row directly.
        parent = _row_index(page, expanded.id)
        assert sorted(_row_index(page, step_id) for step_id in expanded.steps) == list(range(parent + 1, parent + 5))
        if collapsed:
            _screenshot(page, "runs-one-expanded")


def test_training_run_shows_its_datasets_with_their_snapshot_ids(page, store, project):
    run_id = store.first.step_id("train_model")
    inputs = project_client(project).get_run(run_id).inputs.dataset_inputs
    contexts = {i.dataset.name: next(t.value for t in i.tags if t.key == "mlflow.data.context") for i in inputs}
    assert {"training", "heldout"} <= set(contexts.values()), contexts
    loaded = page.locator('[role="status"][title="mlops.step"]')  # the run's tags, fetched with its datasets
    _open(page, f"experiments/{store.experiment_id}/runs/{run_id}", until=loaded)
    more = page.get_by_role("button").filter(has_text=re.compile(r"^\+\d+$"))  # the datasets that did not fit
    if more.count():
        more.click()
    for dataset_input in inputs:
        name, digest = dataset_input.dataset.name, dataset_input.dataset.digest
        assert (project / "data" / "snapshots" / name / f"{digest}.parquet").is_file()  # the digest is the snapshot id
        item = page.get_by_role("button").filter(has_text=f"{name} ({digest})")
        expect(item).to_be_visible()
        expect(item).to_contain_text(contexts[name])


def test_each_training_run_shows_its_gate_decision(page, store, project):
    client = project_client(project)
    decisions = []
    for pipeline in (store.first, store.second):
        run_id = pipeline.step_id("train_model")
        tags = client.get_run(run_id).data.tags
        decisions.append(tags["mlops.gate"])
        gate = page.locator('[role="status"][title="mlops.gate"]')
        _open(page, f"experiments/{store.experiment_id}/runs/{run_id}", until=gate)
        expect(gate).to_have_text(f"mlops.gate: {tags['mlops.gate']}")
        expect(page.locator('[role="status"][title="mlops.gate_reason"]')).to_have_text(
            f"mlops.gate_reason: {tags['mlops.gate_reason']}"
        )
        if pipeline is store.first:
            _screenshot(page, f"gate-{tags['mlops.gate']}")
    assert decisions == ["passed", "failed"]  # the same model on the same rows does not strictly beat the champion


def test_registered_model_shows_the_champion_alias_on_the_stores_version(page, store):
    assert store.champion_run == store.first.step_id("train_model")
    version = f'a[href="#/models/{store.model}/versions/{store.champion}"]'
    alias = '[role="status"][title="champion"]'

    _open(page, "models", until=page.locator(f'a[href="#/models/{store.model}"]'))
    aliased = page.locator(version).filter(has=page.locator(alias))
    expect(aliased).to_have_count(1)
    expect(aliased).to_contain_text(f"Version {store.champion}")
    _screenshot(page, "models")

    _open(page, f"models/{store.model}", until=page.locator(version).first)
    expect(page.locator(alias)).to_have_count(1)  # on one version only
    row = page.get_by_role("row").filter(has=page.locator(alias))
    expect(row.get_by_role("link", name=f"Version {store.champion}", exact=True)).to_be_visible()
    _screenshot(page, "model")

    _open(page, f"models/{store.model}/versions/{store.champion}", until=page.locator(alias))
    expect(_run_link(page, store, store.champion_run)).to_have_text("train_model")  # its source run


def test_training_run_artifacts_show_the_confusion_matrix_image(page, store, project, tmp_path):
    run_id = store.champion_run
    client = project_client(project)
    assert "evaluation.png" in [a.path for a in client.list_artifacts(run_id)]
    png = Path(client.download_artifacts(run_id, "evaluation.png", str(tmp_path))).read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", png[16:24])  # the IHDR chunk

    entry = page.get_by_text("evaluation.png", exact=True)
    _open(page, f"experiments/{store.experiment_id}/runs/{run_id}/artifacts", until=entry)
    entry.click()
    image = page.locator('img[src^="blob:"]').first  # the artifact's bytes, fetched by the page
    expect(image).to_be_visible()
    page.wait_for_function("image => image.complete && image.naturalWidth > 0", arg=image.element_handle())
    assert image.evaluate("image => [image.naturalWidth, image.naturalHeight]") == [width, height]
