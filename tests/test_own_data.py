"""A team's own table in `data/raw/` trains end to end with no code edits; a target that cannot work says why."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from conftest import project_client

from mlops_template import load_config, open_snapshots
from mlops_template.cli.main import main
from mlops_template.scaffold.new import new_project


def run(project: Path, *args: str):
    return CliRunner().invoke(main, ["run", "--project", str(project), *args])


def set_model(project: Path, **values: str) -> None:
    """Set `[model]` keys in the rendered mlops.toml, as a user would edit them."""
    toml = project / "mlops.toml"
    lines = toml.read_text().splitlines()
    for key, value in values.items():
        lines = [f"{key} = {value}" if line.split("=")[0].strip() == key else line for line in lines]
    toml.write_text("\n".join(lines) + "\n")


def registered(project: Path, name: str) -> list[str]:
    client = project_client(project)
    return [str(v.version) for v in client.search_model_versions(f"name='{name}'")]


def predictions(project: Path) -> pd.DataFrame:
    [file] = (project / "data" / "predictions").glob("*.parquet")
    return pd.read_parquet(file)


def churn_table(n: int = 600, seed: int = 0) -> pd.DataFrame:
    """Customers with text categories, gaps in text and numbers, and a yes/no label that follows from them."""
    rng = np.random.default_rng(seed)
    df = pd.DataFrame(
        {
            "customer_id": [f"C{i:05d}" for i in range(n)],
            "plan": rng.choice(["basic", "standard", "premium"], n),
            "region": rng.choice(["north", "south", "east", "west"], n),
            "tenure_months": rng.integers(1, 72, n).astype(float),
            "monthly_fee": rng.normal(50, 15, n).round(2),
        }
    )
    score = (df["plan"] == "basic") * 2.0 + (df["tenure_months"] < 12) * 2.0 + rng.normal(0, 0.3, n)
    df["churned"] = np.where(score > 1.5, "yes", "no")
    df.loc[df.sample(frac=0.08, random_state=1).index, "region"] = None
    df.loc[df.sample(frac=0.05, random_state=2).index, "monthly_fee"] = np.nan
    return df


def test_a_table_with_text_columns_and_gaps_trains_passes_the_shipped_gate_and_predicts(tmp_path):
    project = new_project("churn", directory=tmp_path / "churn", lock=False)
    churn_table().to_csv(project / "data" / "raw" / "customers.csv", index=False)

    result = run(project, "-P", "target=churned")

    assert result.exit_code == 0, result.output
    assert "gate passed: f1=" in result.output
    assert registered(project, "churn") == ["1"]
    scored = predictions(project)
    assert {"plan", "region", "churned", "prediction", "model_version"} <= set(scored.columns)
    assert (scored["prediction"] == scored["churned"]).mean() > 0.85


def test_a_regression_target_trains_with_the_task_switched(tmp_path):
    project = new_project("prices", directory=tmp_path / "prices", lock=False)
    rng = np.random.default_rng(0)
    n = 500
    df = pd.DataFrame(
        {"rooms": rng.integers(1, 7, n), "area": rng.uniform(30, 200, n), "city": rng.choice(["a", "b"], n)}
    )
    df["price"] = (
        1000 * df["area"] + 20000 * df["rooms"] + np.where(df["city"] == "a", 50000, 0) + rng.normal(0, 5000, n)
    )
    df.loc[::13, "area"] = np.nan
    df.to_parquet(project / "data" / "raw" / "homes.parquet")

    wrong = run(project, "-P", "target=price")
    assert wrong.exit_code == 1
    assert "target column 'price' holds 500 distinct numbers" in wrong.output
    assert 'which looks like regression; set task = "regression" under [model] in mlops.toml' in wrong.output

    set_model(project, task='"regression"')
    result = run(project, "-P", "target=price")
    assert result.exit_code == 0, result.output
    assert "gate passed: r2=" in result.output
    client = project_client(project)
    train = client.get_run(client.get_model_version("prices", "1").run_id)
    assert {"r2", "rmse", "mae"} <= set(train.data.metrics) and train.data.metrics["r2"] >= 0.8
    scored = predictions(project)
    assert np.corrcoef(scored["prediction"], scored["price"])[0, 1] > 0.9


def test_a_package_shipped_table_with_blanks_and_text_categories(tmp_path):
    from sklearn.datasets import load_wine

    wine = load_wine(as_frame=True)
    df = wine.frame.rename(columns={"target": "cultivar"})
    df["cultivar"] = wine.target_names[df["cultivar"]]
    df["color_intensity"] = pd.cut(df["color_intensity"], [0, 3, 6, 20], labels=["pale", "medium", "deep"]).astype(str)
    df.loc[::10, "alcohol"] = np.nan
    df.loc[::15, "color_intensity"] = None
    project = new_project("wine", directory=tmp_path / "wine", lock=False)
    df.to_csv(project / "data" / "raw" / "wine.csv", index=False)

    result = run(project, "-P", "target=cultivar")

    assert result.exit_code == 0, result.output
    assert registered(project, "wine") == ["1"]
    scored = predictions(project)
    heldout_ref = project_client(project).get_model_version_by_alias("wine", "champion").tags["mlops.heldout_data"]
    _, heldout = open_snapshots(load_config(project)).read(heldout_ref)
    assert len(scored) == len(heldout) > 0 and set(scored["prediction"]) <= set(wine.target_names)
    assert (scored["prediction"] == scored["cultivar"]).mean() > 0.8


@pytest.mark.parametrize(
    ("table", "args", "message"),
    [
        (
            pd.DataFrame({"plan": ["a", "b"] * 10, "churned": ["yes", "no"] * 10}),
            ["-P", "target=churn"],
            "target column 'churn' is not in the raw data (columns: plan, churned); did you mean 'churned'?; "
            "set target under [params] in mlops.toml or pass -P target=<column>",
        ),
        (
            pd.DataFrame({"plan": ["a", "b"] * 10, "churned": ["no"] * 20}),
            ["-P", "target=churned"],
            "target column 'churned' has one class ('no') in 20 rows; a classifier needs at least two",
        ),
        (
            pd.DataFrame({"plan": pd.Series([], dtype=str), "churned": pd.Series([], dtype=str)}),
            ["-P", "target=churned"],
            "the raw data has no rows; check the files in raw/ and the cleaning in make_data",
        ),
        (
            pd.DataFrame({"plan": ["a", "b"] * 10, "churned": [None] * 20}),
            ["-P", "target=churned"],
            "target column 'churned' has no values in 20 rows of the raw data",
        ),
    ],
    ids=["missing-column", "one-class", "empty-table", "no-labels"],
)
def test_a_target_that_cannot_work_ends_in_one_line_and_registers_nothing(tmp_path, table, args, message):
    project = new_project("bad", directory=tmp_path / "bad", lock=False)
    table.to_csv(project / "data" / "raw" / "table.csv", index=False)

    result = run(project, *args)

    assert result.exit_code == 1
    assert f"step 'make_data' failed: {message}" in result.output
    assert "Traceback" not in result.output and "Error:" not in result.output.split("failed:")[1]
    assert registered(project, "bad") == []
    assert not (project / "data" / "datasets" / "processed.parquet").exists()


def test_a_text_target_under_the_regression_task_says_which_setting_to_change(tmp_path):
    project = new_project("kinds", directory=tmp_path / "kinds", lock=False)
    set_model(project, task='"regression"')
    result = run(project, "--step", "make_data")
    assert result.exit_code == 1
    assert (
        "target column 'species' holds text with 3 distinct values (setosa, versicolor, virginica), "
        'which looks like classification; set task = "classification" under [model] in mlops.toml'
    ) in result.output


def test_integer_columns_are_served_as_doubles_and_mlflow_has_no_warning_for_the_user(tmp_path):
    import os
    import subprocess
    import sys

    import mlflow

    project = new_project("visits", directory=tmp_path / "visits", lock=False)
    df = churn_table()
    df["visits"] = np.random.default_rng(3).integers(0, 30, len(df))  # whole numbers, no gap in the training rows
    df.to_csv(project / "data" / "raw" / "customers.csv", index=False)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "MLOPS_"))}
    done = subprocess.run(
        [sys.executable, "-m", "mlops_template", "run", "-P", "target=churned"],
        cwd=project,
        env={**env, "MLFLOW_DISABLE_TELEMETRY": "true"},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    assert "Inferred schema contains integer column" not in done.stderr
    assert "Failed to validate serving input example" not in done.stderr
    ours = (
        "Warning: code version",
        "    visits.make_data: ",
        "    visits.train_model: ",
    )  # the library's lines, the steps' logs
    assert [line for line in done.stderr.splitlines() if not line.startswith(ours)] == []

    served = mlflow.pyfunc.load_model(project_client(project).get_model_version_download_uri("visits", "1"))
    inputs = {spec.name: spec.type.name for spec in served.metadata.get_input_schema().inputs}
    assert inputs["visits"] == "double"
    request = pd.read_csv(project / "data" / "raw" / "customers.csv").drop(columns="churned").head(4)
    request.loc[0, "visits"] = np.nan  # a gap, as a served request brings one
    assert len(served.predict(request)) == 4
