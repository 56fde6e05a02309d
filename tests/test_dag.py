"""`mlops dag`: the Airflow DAG written from mlops.toml, loaded and run by a real Airflow 3.

Airflow lives in a virtual environment of its own (`.venv-airflow`, made by
`scripts/airflow_env.sh`, which `scripts/test.sh` runs) without this library, as
on a scheduler: its dependencies clash with MLflow's. Scripts in `tests/airflow/`
run there and report as JSON. No Kubernetes cluster can run here, so the pod
DAG is checked through the pods Airflow would request
(`build_pod_request_obj(dry_run=True)`); the local variant runs for real with
`dag.test()`.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from test_pipeline_runs import outputs, reads, runs_of

from mlops_template.cli.main import main
from mlops_template.scaffold.new import new_project

REPO = Path(__file__).resolve().parents[1]
AIRFLOW_BIN = REPO / ".venv-airflow" / "bin"
SCRIPTS = Path(__file__).parent / "airflow"
STEPS = ["make_data", "feat_data", "train_model", "predict"]
NAME = "churn-dag"
REPOSITORY = "123456789012.dkr.ecr.eu-west-1.amazonaws.com/churn-dag"
COMMIT = "0123456789abcdef0123456789abcdef01234567"
# Set in the environment of `mlops dag` and of Airflow: none may appear in a DAG file or a pod spec.
SECRETS = {
    "AWS_ACCESS_KEY_ID": "AKIADAGTESTKEY7QX3ZP",
    "AWS_SECRET_ACCESS_KEY": "dag-secret-9f8e7d6c5b4a3210",
    "MLFLOW_TRACKING_PASSWORD": "dag-tracking-pass-5c1a",
    "MLFLOW_TRACKING_TOKEN": "dag-token-77e2b1",
}
DAG_TABLE = f"""
repository = "{REPOSITORY}"
environment = "prod"
namespace = "ml-pipelines"
service_account = "churn-dag-runner"
secrets = ["churn-dag-mlflow", "churn-dag-extra"]
schedule = "0 3 * * *"
start_date = "2026-01-01"
retries = 3
retry_delay = "2m"
execution_timeout = "1h"
tags = ["team-ml"]

[steps.feat_data.resources]
memory = "6Gi"
memory_limit = "8Gi"

[steps.predict.resources]
image = "registry.example.com/churn-dag-batch:{COMMIT}"
"""
TRAIN_RESOURCES = """cpu = "2"
memory = "4Gi"
cpu_limit = "3500m"
memory_limit = "6Gi"
gpu = 1
node_selector = { "node.kubernetes.io/instance-type" = "g5.xlarge", "team" = "ml" }
tolerations = [
  { key = "nvidia.com/gpu", operator = "Exists", effect = "NoSchedule" },
  { key = "dedicated", value = "ml", effect = "NoExecute", toleration_seconds = 600 },
]
"""


@pytest.fixture(scope="module")
def airflow_bin() -> Path:
    if not (AIRFLOW_BIN / "python").exists():
        pytest.fail(
            "Airflow's environment .venv-airflow is missing: run bash scripts/airflow_env.sh (scripts/test.sh does)"
        )
    return AIRFLOW_BIN


def airflow_env(home: Path, **extra: str) -> dict[str, str]:
    """Airflow's process environment: its own home, and no `mlops` reachable on PATH."""
    ours = str(Path(sys.executable).parent)
    path = os.pathsep.join(p for p in os.environ.get("PATH", "").split(os.pathsep) if p and p != ours)
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("MLOPS_", "MLFLOW_TRACKING", "MLFLOW_RUN", "VIRTUAL_ENV", "PYTHONPATH"))
    }
    env.update(
        PATH=path,
        AIRFLOW_HOME=str(home),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        AIRFLOW__CORE__DAGS_FOLDER=str(home / "dags"),
        MLFLOW_DISABLE_TELEMETRY="true",
        **extra,
    )
    assert shutil.which("mlops", path=path) is None, "mlops must not be on Airflow's PATH"
    return env


@pytest.fixture(scope="module")
def airflow_home(tmp_path_factory: pytest.TempPathFactory, airflow_bin: Path) -> Path:
    """An Airflow home with a migrated SQLite database (what `dag.test()` records into)."""
    home = tmp_path_factory.mktemp("airflow-home")
    (home / "dags").mkdir()
    done = subprocess.run(
        [str(airflow_bin / "airflow"), "db", "migrate"],
        env=airflow_env(home),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    probe = subprocess.run(
        [str(airflow_bin / "python"), "-c", "import importlib.util as u; print(u.find_spec('mlops_template'))"],
        env=airflow_env(home),
        capture_output=True,
        text=True,
    )
    assert probe.stdout.strip() == "None", "Airflow's environment must not have mlops_template"
    return home


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A freshly rendered project, never run: tests take copies."""
    return new_project(NAME, directory=tmp_path_factory.mktemp("dag") / NAME, lock=False)


@pytest.fixture
def project(rendered: Path, tmp_path: Path) -> Path:
    """This test's copy of the rendered project, with the [dag] table and the training step's resources."""
    root = Path(shutil.copytree(rendered, tmp_path / NAME, symlinks=True))
    text = replace_table((root / "mlops.toml").read_text(), "[steps.train_model.resources]", TRAIN_RESOURCES)
    (root / "mlops.toml").write_text(replace_table(text, "[dag]", DAG_TABLE))
    return root


def replace_table(text: str, header: str, body: str) -> str:
    """`text` with the TOML table `header` (up to the next blank line) replaced by `header` and `body`."""
    start = text.index("\n" + header) + 1  # the header line may end in a comment
    end = text.index("\n\n", start)
    return text[:start] + header + "\n" + body.strip("\n") + text[end:]


def mlops(root: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    variables = {k: v for k, v in os.environ.items() if not k.startswith(("MLOPS_", "MLFLOW_TRACKING"))}
    return subprocess.run(
        [sys.executable, "-m", "mlops_template", *args],
        cwd=root,
        env={**variables, "MLFLOW_DISABLE_TELEMETRY": "true", **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def inspect(airflow_bin: Path, home: Path, dag_file: Path, run_id: str, **env: str) -> dict:
    """What Airflow makes of a DAG file: import errors, task order, each pod it would request."""
    out = home / "inspect.json"
    dags = home / "dags"
    shutil.rmtree(dags)
    dags.mkdir()
    shutil.copy(dag_file, dags / dag_file.name)
    done = subprocess.run(
        [str(airflow_bin / "python"), str(SCRIPTS / "inspect_dags.py"), str(dags), run_id, str(out)],
        env=airflow_env(home, **env),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    return json.loads(out.read_text())


def test_pod_dag_loads_in_airflow_and_asks_for_what_mlops_toml_says(project, airflow_bin, airflow_home):
    done = mlops(project, "dag", **SECRETS)
    assert done.returncode == 0, done.stderr
    dag_file = project / "dags" / f"{NAME}.py"
    assert done.stdout.strip() == f"wrote {dag_file}"
    text = dag_file.read_text()
    imports = [line for line in text.splitlines() if line.startswith(("import ", "from "))]
    assert all(line.split()[1].split(".")[0] in ("__future__", "datetime", "airflow", "kubernetes") for line in imports)

    run_id = "manual__2026-11-26T10:00:00+00:00"
    variable = {f"AIRFLOW_VAR_{NAME.upper()}_IMAGE_TAG": COMMIT}
    seen = inspect(airflow_bin, airflow_home, dag_file, run_id, **SECRETS, **variable)

    assert seen["import_errors"] == {}
    dag = seen["dags"][NAME]
    assert dag["order"] == STEPS
    assert dag["schedule"] == "0 3 * * *"
    assert {"mlops", "team-ml", NAME} <= set(dag["tags"])
    tasks = dag["tasks"]
    assert [tasks[s]["upstream"] for s in STEPS] == [[], ["make_data"], ["feat_data"], ["train_model"]]
    for step in STEPS:
        task = tasks[step]
        assert task["operator"] == "KubernetesPodOperator"
        assert (task["retries"], task["retry_delay"], task["execution_timeout"]) == (3, 120.0, 3600.0)
        pod = task["pod"]
        spec, [container] = pod["spec"], pod["spec"]["containers"]
        assert pod["metadata"]["namespace"] == "ml-pipelines"
        assert spec["serviceAccountName"] == "churn-dag-runner"
        assert container["args"] == [
            "run",
            "--step",
            step,
            "--environment",
            "prod",
            "--pipeline-run",
            run_id,
            "--plan",
            ",".join(STEPS),
            "--supersede",
        ]
        assert [e["secretRef"]["name"] for e in container["envFrom"]] == ["churn-dag-mlflow", "churn-dag-extra"]
        # Only the commit the image was built from is passed by value: the image has no .git to read it from.
        assert container["env"] == [{"name": "MLOPS_GIT_COMMIT", "value": COMMIT}]
        expected_image = (
            f"registry.example.com/churn-dag-batch:{COMMIT}" if step == "predict" else f"{REPOSITORY}:{COMMIT}"
        )
        assert container["image"] == expected_image
    train = tasks["train_model"]["pod"]["spec"]
    assert train["containers"][0]["resources"] == {
        "requests": {"cpu": "2", "memory": "4Gi"},
        "limits": {"cpu": "3500m", "memory": "6Gi", "nvidia.com/gpu": "1"},
    }
    assert train["nodeSelector"] == {"node.kubernetes.io/instance-type": "g5.xlarge", "team": "ml"}
    assert train["tolerations"] == [
        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},
        {"key": "dedicated", "operator": "Equal", "value": "ml", "effect": "NoExecute", "tolerationSeconds": 600},
    ]
    feat = tasks["feat_data"]["pod"]["spec"]
    assert feat["containers"][0]["resources"] == {"requests": {"memory": "6Gi"}, "limits": {"memory": "8Gi"}}
    assert not feat.get("nodeSelector") and not feat.get("tolerations")
    assert "resources" not in tasks["make_data"]["pod"]["spec"]["containers"][0] or not any(
        tasks["make_data"]["pod"]["spec"]["containers"][0]["resources"].values()
    )

    for step in STEPS:
        assert restricted_violations(tasks[step]["pod"]) == [], step
        [mount] = tasks[step]["pod"]["spec"]["containers"][0]["volumeMounts"]
        assert mount["mountPath"] == "/tmp"  # the one writable folder on a read-only root

    everything = text + json.dumps(seen)
    for name, value in SECRETS.items():
        assert value not in everything, f"{name}'s value leaked"

    # A deployment whose CI never set the Variable: each task fails rendering, naming it; no pod is asked for.
    unset = inspect(airflow_bin, airflow_home, dag_file, run_id, **SECRETS)["dags"][NAME]["tasks"]
    assert unset["predict"]["pod"]["spec"]["containers"][0]["image"] == f"registry.example.com/churn-dag-batch:{COMMIT}"
    for step in STEPS[:3]:  # predict names an image of its own, with its tag
        assert "pod" not in unset[step]
        assert unset[step]["render_error"] == (
            f"RuntimeError: Airflow Variable {NAME}_image_tag is not set, so the pods have no image tag; push an "
            f"image from CI (it sets the Variable) or run: airflow variables set {NAME}_image_tag <commit SHA>"
        )


def restricted_violations(pod: dict) -> list[str]:
    """The rules of Kubernetes' restricted Pod Security Standard (v1.30) a pod breaks, by name."""
    spec = pod["spec"]
    pod_context = spec.get("securityContext") or {}
    broken = []
    if any(spec.get(k) for k in ("hostNetwork", "hostPID", "hostIPC")):
        broken.append("host namespaces")
    allowed_volumes = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim"}
    allowed_volumes |= {"projected", "secret", "name"}
    if any(set(v) - allowed_volumes for v in spec.get("volumes") or []):
        broken.append("volume types")
    pod_seccomp = (pod_context.get("seccompProfile") or {}).get("type")
    for container in spec["containers"] + (spec.get("initContainers") or []):
        context = container.get("securityContext") or {}
        if context.get("privileged"):
            broken.append("privileged")
        if context.get("allowPrivilegeEscalation") is not False:
            broken.append("allowPrivilegeEscalation")
        capabilities = context.get("capabilities") or {}
        if "ALL" not in (capabilities.get("drop") or []) or set(capabilities.get("add") or []) - {"NET_BIND_SERVICE"}:
            broken.append("capabilities")
        if not (context.get("runAsNonRoot") or pod_context.get("runAsNonRoot")):
            broken.append("runAsNonRoot")
        if 0 in (context.get("runAsUser"), pod_context.get("runAsUser")):
            broken.append("runAsUser")
        seccomp = (context.get("seccompProfile") or {}).get("type") or pod_seccomp
        if seccomp not in ("RuntimeDefault", "Localhost"):
            broken.append("seccompProfile")
        if any(port.get("hostPort") for port in container.get("ports") or []):
            broken.append("hostPort")
    return broken


def test_the_restricted_check_finds_what_a_default_pod_breaks():
    bare = {"spec": {"containers": [{"name": "base"}]}}
    assert restricted_violations(bare) == ["allowPrivilegeEscalation", "capabilities", "runAsNonRoot", "seccompProfile"]


def test_dag_file_passes_ruff_with_the_project_settings_and_the_defaults(project):
    assert mlops(project, "dag").returncode == 0
    assert mlops(project, "dag", "--local").returncode == 0
    ruff = str(Path(sys.executable).parent / "ruff")
    for args in (["check"], ["format", "--check"], ["check", "--isolated"], ["format", "--check", "--isolated"]):
        done = subprocess.run([ruff, *args, "dags"], cwd=project, capture_output=True, text=True)
        assert done.returncode == 0, f"ruff {' '.join(args)}: {done.stdout}{done.stderr}"


def test_a_fixed_image_replaces_the_variable_and_latest_gets_a_warning(project):
    done = mlops(project, "dag", "--image", f"{REPOSITORY}:latest", "--output", "fixed.py")
    assert done.returncode == 0, done.stderr
    text = (project / "fixed.py").read_text()
    assert f'IMAGE = "{REPOSITORY}:latest"' in text and "var.value" not in text
    # A commit is passed only to the step whose own image is tagged with one (predict's), not for `latest`.
    assert text.count("MLOPS_GIT_COMMIT") == 1 and f'env_vars={{"MLOPS_GIT_COMMIT": "{COMMIT}"}}' in text
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=project, capture_output=True, text=True).stdout.strip()
    assert f"Warning: --image {REPOSITORY}:latest runs whatever was pushed last" in done.stderr
    assert f"{REPOSITORY}:{head}" in done.stderr  # the tag to use instead


def test_regenerating_gives_the_same_bytes_and_keeps_a_hand_edit(project):
    first = mlops(project, "dag", "--output", "a.py", PYTHONHASHSEED="1")
    second = mlops(project, "dag", "--output", "b.py", PYTHONHASHSEED="2")
    assert first.returncode == second.returncode == 0
    assert (project / "a.py").read_bytes() == (project / "b.py").read_bytes()
    again = mlops(project, "dag", "--output", "a.py", PYTHONHASHSEED="3")
    assert again.stdout.startswith("unchanged:")

    # A change in mlops.toml rewrites a file mlops dag wrote without asking.
    toml = project / "mlops.toml"
    toml.write_text(toml.read_text().replace("retries = 3", "retries = 4"))
    assert mlops(project, "dag", "--output", "a.py").returncode == 0
    assert '"retries": 4' in (project / "a.py").read_text()

    # A hand edit is kept and named by line; --force replaces it.
    dag_file = project / "a.py"
    lines = dag_file.read_text().splitlines(keepends=True)
    edited = next(i for i, line in enumerate(lines) if 'namespace="ml-pipelines"' in line)
    lines[edited] = lines[edited].replace("ml-pipelines", "hand-picked")
    dag_file.write_text("".join(lines))
    before = dag_file.read_bytes()
    refused = mlops(project, "dag", "--output", "a.py")
    assert refused.returncode == 1
    [message] = refused.stderr.strip().splitlines()
    assert f"line {edited + 1}" in message and "--force" in message
    assert dag_file.read_bytes() == before
    forced = mlops(project, "dag", "--output", "a.py", "--force")
    assert mlops(project, "dag", "--output", "c.py").returncode == 0
    assert forced.returncode == 0 and dag_file.read_bytes() == (project / "c.py").read_bytes()


def dags_files(project: Path) -> dict[str, bytes]:
    """The files of the project's dags/ folder (the shipped DAG), by name."""
    return {p.name: p.read_bytes() for p in (project / "dags").iterdir()}


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ("[steps.predict.resources]", "[steps.predcit.resources]", "[steps.predcit] names no step of the pipeline"),
        ('memory = "4Gi"', 'memory = "10 GB"', "memory '10 GB' is not a Kubernetes quantity"),
        ('cpu = "2"', 'cpu = "-1"', "cpu '-1' is not a Kubernetes quantity"),
        ('memory_limit = "6Gi"', 'memory_limit = "2Gi"', "memory_limit '2Gi' is below memory '4Gi'"),
        (f":{COMMIT}", "", "image 'registry.example.com/churn-dag-batch' has no tag"),
        ("retries = 3", "retires = 3", "unknown key 'retires' in [dag]; did you mean 'retries'?"),
        (
            'cpu = "2"',
            'cpu = "2"\nmemroy = "1Gi"',
            "unknown key 'memroy' in [steps.train_model.resources]; did you mean 'memory'?",
        ),
        (f'repository = "{REPOSITORY}"', f'repository = "{REPOSITORY}:v1"', "names a tag; write the repository alone"),
        ('operator = "Exists", effect', 'operator = "Exist", effect', "operator 'Exist' is not valid"),
    ],
)
def test_bad_input_is_refused_in_one_line_before_anything_is_written(project, old, new, expected):
    toml = project / "mlops.toml"
    assert old in toml.read_text()
    toml.write_text(toml.read_text().replace(old, new, 1))
    before = dags_files(project)
    result = CliRunner().invoke(main, ["dag", "--project", str(project)])
    assert result.exit_code == 1
    [line] = result.output.strip().splitlines()
    assert expected in line and "Traceback" not in result.output
    assert dags_files(project) == before


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--image", "registry.example.com/churn"], "--image 'registry.example.com/churn' has no tag"),
        (["--environment", "local"], "environment 'local' keeps its data or runs in local files"),
        (["--environment", "qa"], "unknown environment 'qa'"),
    ],
)
def test_bad_options_are_refused_in_one_line(project, args, expected):
    before = dags_files(project)
    result = CliRunner().invoke(main, ["dag", "--project", str(project), *args])
    assert result.exit_code == 1
    [line] = result.output.strip().splitlines()
    assert expected in line
    assert dags_files(project) == before


# ---------------------------------------------------------------------------------------------------------------
# The local variant, run by Airflow's dag.test()

FAIL_ONCE = '''
import functools
import os
import pathlib
import signal


def _once(step, how):
    """The step fails on its first attempt only: raising after its work, or killed before it (SIGKILL)."""

    @functools.wraps(step)
    def wrapper(ctx):
        marker = pathlib.Path({markers!r}) / step.__name__
        first = not marker.exists()
        marker.touch()
        if first and how == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        result = step(ctx)
        if first:
            raise RuntimeError(f"{{step.__name__}} fails once on purpose")
        return result

    return wrapper


pipeline = Pipeline([make_data, _once(feat_data, "raise"), _once(train_model, "kill"), predict])
'''


def run_dag(airflow_bin: Path, home: Path, dag_file: Path) -> dict:
    out = home / "run.json"
    out.unlink(missing_ok=True)
    for old in (home / "dags").iterdir():
        old.unlink()
    deployed = Path(shutil.copy(dag_file, home / "dags"))  # dag.test() runs a DAG of the dags folder
    done = subprocess.run(
        [str(airflow_bin / "python"), str(SCRIPTS / "run_dag.py"), str(deployed), str(out)],
        env=airflow_env(home),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0 and out.exists(), (done.stdout + done.stderr)[-6000:]
    return json.loads(out.read_text())


@pytest.fixture
def local_project(rendered: Path, tmp_path: Path) -> Path:
    """This test's copy of the rendered project with its local DAG, in a folder whose name a shell must quote."""
    root = Path(shutil.copytree(rendered, tmp_path / "my proj & co's" / NAME, symlinks=True))
    toml = root / "mlops.toml"
    toml.write_text(replace_table(toml.read_text(), "[dag]", 'retries = 1\nretry_delay = "1s"'))
    done = mlops(root, "dag", "--local")
    assert done.returncode == 0, done.stderr
    return root


def test_local_dag_runs_the_whole_pipeline_as_one_pipeline_run(
    local_project, airflow_bin, airflow_home, trained_project
):
    outcome = run_dag(airflow_bin, airflow_home, local_project / "dags" / f"{NAME}_local.py")
    print(f"dag.test() of the local DAG: {outcome['seconds']:.1f} s")
    assert outcome["state"] == "success"
    assert {t: s["try_number"] for t, s in outcome["tasks"].items()} == dict.fromkeys(STEPS, 1)

    parents, children = runs_of(local_project)
    [parent] = parents
    assert parent.data.tags["mlops.pipeline_run"] == outcome["run_id"]
    assert parent.info.status == "FINISHED"
    assert sorted(c.data.tags["mlops.step"] for c in children) == sorted(STEPS)
    assert all(c.info.status == "FINISHED" for c in children)

    # Registry and predictions as after `mlops run`, and the same data in every step.
    models = mlops(local_project, "models")
    assert models.returncode == 0 and "champion" in models.stdout
    _, trained_children = runs_of(trained_project.root)
    by_step = {c.data.tags["mlops.step"]: c for c in trained_children}
    for child in children:
        step = child.data.tags["mlops.step"]
        assert outputs(child).keys() == outputs(by_step[step]).keys()
        if step != "predict":
            assert outputs(child) == outputs(by_step[step]), step
    assert list((local_project / "data" / "predictions").glob("*.parquet"))


def test_local_dag_retries_a_failed_and_a_killed_step_within_one_pipeline_run(local_project, airflow_bin, airflow_home):
    markers = local_project.parent / "markers"
    markers.mkdir()
    main_py = local_project / "src" / NAME.replace("-", "_") / "main.py"
    source = main_py.read_text()
    line = "pipeline = Pipeline([make_data, feat_data, train_model, predict])\n"
    assert line in source
    main_py.write_text(source.replace(line, FAIL_ONCE.format(markers=str(markers))))

    outcome = run_dag(airflow_bin, airflow_home, local_project / "dags" / f"{NAME}_local.py")
    assert outcome["state"] == "success"
    tries = {t: s["try_number"] for t, s in outcome["tasks"].items()}
    assert tries == {"make_data": 1, "feat_data": 2, "train_model": 2, "predict": 1}

    parents, children = runs_of(local_project)
    [parent] = [p for p in parents if p.data.tags["mlops.pipeline_run"] == outcome["run_id"]]
    assert parent.info.status == "FINISHED"
    mine = sorted(
        (c for c in children if c.data.tags["mlflow.parentRunId"] == parent.info.run_id),
        key=lambda r: r.info.start_time,
    )
    attempts = {s: [c for c in mine if c.data.tags["mlops.step"] == s] for s in STEPS}
    assert [len(attempts[s]) for s in STEPS] == [1, 2, 2, 1]
    failed, retried = attempts["feat_data"]
    assert (failed.info.status, retried.info.status) == ("FAILED", "FINISHED")
    killed, rerun = attempts["train_model"]
    assert (killed.info.status, rerun.info.status) == ("FAILED", "FINISHED")
    assert "superseded by a retry" in killed.data.tags["mlops.lost"]
    # The retry read what this pipeline run's make_data wrote, like the first attempt would have.
    assert set(reads(retried).values()) <= set(outputs(attempts["make_data"][0]).values())
    assert reads(rerun)["featurized"] == outputs(retried)["featurized"]
