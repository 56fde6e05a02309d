"""A rendered project's image, built and run for real with its own scripts.

No image registry can be reached here, so the base image is made first (`base_image.py`:
debootstrap, `podman import`, cached between runs by its recipe). Then the project's own
`scripts/build_image.sh` builds its Dockerfile unchanged and its own `scripts/run_image.sh`
runs the pipeline in it. Engine settings come only through podman's own variables:
BUILDAH_ISOLATION, a CONTAINERS_CONF file whose settings are the ones the rendered README
gives podman users (plus host networking, so a container reaches the S3 server on loopback),
and CONTAINERS_STORAGE_CONF: the tests keep their images in a store of their own (under
~/.cache), which they prune, and never touch the images of the machine's user.

This is the slowest module (minutes when the base image and layers are not cached yet):
MLOPS_SKIP_IMAGE_TEST=1 skips it for a quick local run.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import time
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

import base_image
import pandas as pd
import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from mlops_template.scaffold.new import new_project

pytestmark = [
    pytest.mark.skipif(
        bool(os.environ.get("MLOPS_SKIP_IMAGE_TEST")), reason="MLOPS_SKIP_IMAGE_TEST is set: the image is not built"
    ),
    # One worker builds the image once: the store is shared, and each build removes the tags earlier ones left.
    pytest.mark.xdist_group("image"),
]

NAME = "iris-img"
# The tests' own image store, kept between runs: the base image and the last build's layers are its cache.
STORE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "mlops-template-tests" / "containers"
UID = "10001"
TOOLS = ("podman", "runc", "debootstrap", "tar", "git")
FAKE_KEY_ID = "AKIAMLOPSFAKE7QX3ZK9"
FAKE_SECRET = "mlopsFakeSecret+8fJq2/W0vZpLx4Nc"
FAKE_TOKEN = "mlopsFakeSessionToken9Yt3Rw"


@dataclass(frozen=True)
class Done:
    """A finished command: its exit code, what it printed on each stream, and how long it took."""

    code: int
    stdout: str
    stderr: str
    seconds: float

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


def run(command: list[str], cwd: Path, env: dict[str, str], timeout: float = 1500) -> Done:
    start = time.monotonic()
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    return Done(done.returncode, done.stdout, done.stderr, time.monotonic() - start)


def ok(done: Done) -> str:
    assert done.code == 0, done.output[-6000:]
    return done.output


BIN = Path(sys.executable).parent  # the test venv's commands: mlops, uv


def podman_notes(readme: Path) -> tuple[str, str]:
    """The rendered README's notes for podman users: their shell lines and their containers.conf."""
    notes = readme.read_text(encoding="utf-8").split("### Notes for podman users", 1)[1]
    shell = re.search(r"```bash\n(.*?)```", notes, re.DOTALL).group(1)
    conf = re.search(r"```toml\n(.*?)```", notes, re.DOTALL).group(1)
    return shell, conf


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """A rendered project with its lock, as `mlops new` makes it."""
    return new_project(NAME, directory=tmp_path_factory.mktemp("image") / NAME)


@pytest.fixture(scope="module")
def engine_env(project: Path, tmp_path_factory) -> dict[str, str]:
    """The environment of a shell with podman set up as the README's notes say, and the base image in place."""
    missing = [tool for tool in TOOLS if not (shutil.which(tool) or Path("/usr/sbin", tool).exists())]
    if missing:
        pytest.fail(
            f"{', '.join(missing)} not installed: run `bash scripts/debian_packages.sh` "
            "(or set MLOPS_SKIP_IMAGE_TEST=1 to skip the image test)"
        )
    shell, conf = podman_notes(project / "README.md")
    assert "export BUILDAH_ISOLATION=chroot" in shell and 'export CONTAINERS_CONF="$HOME/' in shell  # not the project
    conf_file = tmp_path_factory.mktemp("podman") / "containers.conf"
    # Host networking: the cloud check's S3 server listens on the host's loopback only.
    conf_file.write_text(conf.replace("[containers]\n", '[containers]\nnetns = "host"\n'), encoding="utf-8")
    storage_file = conf_file.with_name("storage.conf")
    storage_file.write_text(
        f'[storage]\ndriver = "overlay"\ngraphroot = "{STORE / "storage"}"\nrunroot = "{STORE / "run"}"\n',
        encoding="utf-8",
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLOPS_", "MLFLOW_", "AWS_", "PYTEST_"))}
    env |= {
        "BUILDAH_ISOLATION": "chroot",
        "CONTAINERS_CONF": str(conf_file),
        "CONTAINERS_STORAGE_CONF": str(storage_file),
        "CONTAINER_ENGINE": "podman",  # the project's scripts' own switch: a docker CLI without a daemon is here
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "PATH": f"{env['PATH']}:/usr/sbin:/sbin",
    }
    base_image.ensure(env, tmp_path_factory.mktemp("base") / "debootstrap.log")
    return env


@pytest.fixture(scope="module")
def built(project: Path, engine_env: dict[str, str]) -> tuple[str, Done]:
    """The project's image, built by its own script, and the commit it is tagged with.

    The image and its builder stage stay until the next run builds its own (their layers are
    that build's cache); then what earlier runs left is removed from the tests' store.
    """
    sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=project, capture_output=True, text=True).stdout.strip()
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    done = run(["bash", "scripts/build_image.sh"], project, engine_env)
    ok(done)
    listed = run(["podman", "images", "--format", "{{.Repository}}:{{.Tag}}", f"localhost/{NAME}"], project, engine_env)
    earlier = [tag for tag in ok(listed).split() if tag.split(":")[-1] not in (sha, "latest")]
    if earlier:
        run(["podman", "rmi", *earlier], project, engine_env)
    run(["podman", "image", "prune", "--force", "--filter", f"until={started}"], project, engine_env)
    return sha, done


@pytest.fixture(scope="module")
def first_run(project: Path, engine_env: dict[str, str], built) -> Done:
    """The whole pipeline, run in the image by the project's own script."""
    return run(["bash", "scripts/run_image.sh"], project, engine_env)


@pytest.fixture(scope="module")
def step_runs(project: Path, engine_env: dict[str, str], first_run: Done) -> list[Done]:
    """A second pipeline run, one step per container as pods run it, joined by its key."""
    ok(first_run)
    return [
        run(
            [
                "bash",
                "scripts/run_image.sh",
                "run",
                "--step",
                step,
                "--pipeline-run",
                "img-2",
                "--plan",
                "train_model,predict",
                "--no-cache",  # each step does its work in its container, none reused from the first run
            ],
            project,
            engine_env,
        )
        for step in ("train_model", "predict")
    ]


def in_image(engine_env: dict[str, str], project: Path, code: str) -> str:
    """What Python code prints in the image, run as its default user."""
    return ok(
        run(["podman", "run", "--rm", "--entrypoint", "python", f"{NAME}:latest", "-c", code], project, engine_env)
    )


def query(project: Path, sql: str, *args) -> list[tuple]:
    """Rows of the project's SQLite tracking store, read with sqlite3 (the image's MLflow may be newer than ours)."""
    with closing(sqlite3.connect(project / "mlruns.db")) as connection:
        return connection.execute(sql, args).fetchall()


# -- the image ----------------------------------------------------------------------------------------


def test_build_tags_the_full_commit_and_latest_and_runs_as_a_fixed_non_root_user(built, engine_env, project):
    sha, done = built
    assert re.fullmatch(r"[0-9a-f]{40}", sha)
    assert f"built {NAME}:{sha} and {NAME}:latest" in done.output
    [config] = json.loads(ok(run(["podman", "image", "inspect", f"{NAME}:{sha}"], project, engine_env)))
    assert config["Config"]["User"] == UID  # not root, nor empty (which means root)
    assert config["Config"]["Entrypoint"] == ["mlops"] and config["Config"]["Cmd"] == ["run"]
    assert config["Config"]["Labels"]["org.opencontainers.image.revision"] == sha
    assert "MLOPS_ENVIRONMENT=local" in config["Config"]["Env"]
    assert f"localhost/{NAME}:latest" in config["RepoTags"]
    assert in_image(engine_env, project, "import os; print(os.getuid(), os.getgid())").split() == [UID, UID]


def test_the_image_holds_the_environment_and_source_only(built, engine_env, project):
    code = """
import json, os
found = []
for top in ("/app", "/home", "/root", "/tmp", "/opt"):
    for dirpath, dirnames, filenames in os.walk(top):
        for name in dirnames + filenames:
            if name in {".git", "mlruns", "mlruns.db", "mlflow.db", "mlartifacts", ".env", ".aws", ".mlops"}:
                found.append(os.path.join(dirpath, name))
print(json.dumps({"app": sorted(os.listdir("/app")), "found": found, "data": os.path.exists("/app/data")}))
"""
    seen = json.loads(in_image(engine_env, project, code))
    assert seen == {"app": [".venv", "MLproject", "mlops.toml", "src"], "found": [], "data": False}


def test_the_versions_in_the_image_are_uv_locks(built, engine_env, project):
    code = """
import json
from importlib.metadata import distributions
from packaging.markers import default_environment
print(json.dumps({"installed": sorted([d.metadata["Name"], d.version] for d in distributions()), "markers": default_environment()}))
"""
    seen = json.loads(in_image(engine_env, project, code))
    exported = ok(
        run(
            [str(BIN / "uv"), "export", "--frozen", "--no-dev", "--no-hashes", "--no-emit-project", "--no-header"],
            project,
            engine_env,
        )
    )
    locked = {}
    for line in exported.splitlines():
        line = line.strip()
        if not line or line.startswith(("#", "-")):
            continue
        if line.startswith((".", "/")):  # the vendored library, named by its wheel: name-version-tags.whl
            name, version = Path(line.split(" ;")[0]).name.split("-")[:2]
            locked[canonicalize_name(name)] = version
            continue
        requirement = Requirement(line)
        if requirement.marker is None or requirement.marker.evaluate(seen["markers"]):
            [pin] = requirement.specifier
            locked[canonicalize_name(requirement.name)] = pin.version
    installed = {canonicalize_name(name): version for name, version in seen["installed"]}
    assert installed == locked
    assert installed["mlops-template"] == "0.1.0" and "pytest" not in installed  # the vendored wheel; no test extra


def test_another_base_image_is_named_by_build_arg_and_one_that_is_not_there_fails_the_build(built, engine_env, project):
    mirror = "localhost/mirror/python:3.11-slim-bookworm"  # a registry mirror's copy of the official base
    ok(run(["podman", "tag", base_image.NAME, mirror], project, engine_env))
    try:
        done = run(
            ["bash", "scripts/build_image.sh", "--image", f"{NAME}-mirror"],
            project,
            engine_env | {"BASE_IMAGE": mirror},
        )
        assert f"built {NAME}-mirror:{built[0]}" in ok(done)
        missing = run(
            ["bash", "scripts/build_image.sh", "--image", f"{NAME}-nowhere"],
            project,
            engine_env | {"BASE_IMAGE": "localhost/nowhere/python:0"},
        )
        assert missing.code != 0 and "localhost/nowhere/python:0" in missing.output
    finally:
        run(
            ["podman", "rmi", "--force", f"{NAME}-mirror:{built[0]}", f"{NAME}-mirror:latest", mirror],
            project,
            engine_env,
        )


def test_the_image_runs_on_a_read_only_root_writing_only_under_tmp(built, engine_env, project):
    code = """
import json, os, tempfile
import matplotlib
try:
    open("/home/mlops/written", "w")  # the image user's own folder: only a read-only root refuses it
    root = "writable"
except OSError as exc:
    root = type(exc).__name__
print(json.dumps({"root": root, "home": os.environ["HOME"], "tmp": tempfile.gettempdir(), "mpl": matplotlib.get_configdir()}))
"""
    command = ["podman", "run", "--rm", "--read-only", "--tmpfs", "/tmp", "--entrypoint", "python", f"{NAME}:latest"]
    seen = json.loads(ok(run([*command, "-c", code], project, engine_env)).strip().splitlines()[-1])
    assert seen == {"root": "OSError", "home": "/tmp", "tmp": "/tmp", "mpl": "/tmp/matplotlib"}
    for script in ("run_image.sh", "run_image_cloud.sh"):  # run as pods run it (the first run below went so)
        assert '"$ENGINE" run --rm --read-only --tmpfs /tmp ' in (project / "scripts" / script).read_text()


# -- running it ---------------------------------------------------------------------------------------


def test_run_image_runs_the_pipeline_and_its_results_stay_on_the_host(first_run, project, built):
    output = ok(first_run)
    # The image has no .git: its runs record the commit it was built from, passed in by run_image.sh.
    assert query(project, "SELECT DISTINCT value FROM tags WHERE key = 'mlops.git_commit'") == [(built[0],)]
    assert query(project, "SELECT DISTINCT value FROM tags WHERE key = 'mlops.git_dirty'") == [("false",)]
    assert "gate passed" in output and f"{NAME} v1 is champion" in output
    prediction_file = Path(re.search(r"predictions → (\S+\.parquet)", output).group(1))
    assert prediction_file.parent == project / "data" / "predictions"  # on the host, where the project is
    predictions = pd.read_parquet(prediction_file)
    assert len(predictions) > 0 and set(predictions["model_version"]) == {1}
    assert (project / "data" / "models" / NAME / "v1").is_dir()
    assert query(project, "SELECT name, version FROM model_versions") == [(NAME, 1)]
    assert query(project, "SELECT alias, version FROM registered_model_aliases") == [("champion", 1)]
    # Run as the caller: everything the container wrote is the caller's.
    written = [project / "mlruns.db", *(project / "data").rglob("*"), *(project / "mlruns").rglob("*")]
    assert {p.stat().st_uid for p in written} == {os.getuid()}
    # The artifact paths the store recorded are the host's own, so the host can read them.
    assert query(project, "SELECT artifact_location FROM experiments WHERE name = ?", NAME) == [
        ((project / "mlruns").as_uri(),)
    ]


def test_a_second_run_one_step_per_container_finds_the_champion(step_runs, project):
    train, predict = (ok(done) for done in step_runs)
    assert re.search(r"gate failed: .*does not beat champion v1", train), train[-2000:]
    assert f"model {NAME} v1" in predict
    parents = query(
        project,
        "SELECT r.run_uuid, r.status FROM runs r JOIN tags t ON t.run_uuid = r.run_uuid "
        "WHERE t.key = 'mlops.pipeline_run' AND t.value = 'img-2'",
    )
    [(parent, status)] = parents
    children = query(
        project,
        "SELECT s.value FROM tags p JOIN tags s ON s.run_uuid = p.run_uuid AND s.key = 'mlops.step' "
        "WHERE p.key = 'mlflow.parentRunId' AND p.value = ?",
        parent,
    )
    assert sorted(step for (step,) in children) == ["predict", "train_model"] and status == "FINISHED"
    assert query(project, "SELECT count(*) FROM model_versions") == [(1,)]  # nothing new registered


def test_run_image_cloud_passes_aws_keys_by_name_and_never_prints_them(built, project, engine_env, s3_endpoint):
    import boto3

    bucket = "img-cloud"
    env = engine_env | {
        "AWS_ACCESS_KEY_ID": FAKE_KEY_ID,
        "AWS_SECRET_ACCESS_KEY": FAKE_SECRET,
        "AWS_SESSION_TOKEN": FAKE_TOKEN,
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL_S3": s3_endpoint,
        "MLOPS_STORAGE": f"s3://{bucket}/{NAME}",
        "HOME": str(project.parent / "home-without-aws"),  # no ~/.aws: the keys are the only credentials
        "NO_PROXY": "127.0.0.1,localhost",
    }
    s3 = boto3.client(
        "s3",
        endpoint_url=s3_endpoint,
        region_name="us-east-1",
        aws_access_key_id=FAKE_KEY_ID,
        aws_secret_access_key=FAKE_SECRET,
    )
    s3.create_bucket(Bucket=bucket)
    csv = project.parent / "customers.csv"
    csv.write_text("id,plan\n1,basic\n2,pro\n", encoding="utf-8")
    add = run(
        [str(BIN / "mlops"), "data", "add", str(csv), "--name", "customers", "--environment", "dev"], project, env
    )
    ok(add)

    done = run(
        ["bash", "-x", "scripts/run_image_cloud.sh", "--environment", "dev", "data", "ls", "--json"], project, env
    )

    output = ok(done)
    for secret in (FAKE_KEY_ID, FAKE_SECRET, FAKE_TOKEN):
        assert secret not in output
    trace = done.stderr  # bash -x: every command as it ran, the engine's included
    assert re.search(r"^\++ podman run .*--env AWS_SECRET_ACCESS_KEY --env", trace, re.MULTILINE), trace[-3000:]
    listed = json.loads(done.stdout)
    assert [entry["name"] for entry in listed] == ["customers"]  # the container signed its requests with the keys
