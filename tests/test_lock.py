"""A rendered project installs anywhere: the library's wheel in `vendor/`, every package pinned in `uv.lock`.

No package index has mlops-template. `mlops new` puts its own wheel in the project and locks the
project to it; a fresh copy of the project, away from this repository, installs from the lock
and passes its own tests; `mlops vendor` refreshes wheel, pyproject and lock after an upgrade;
where no registry can be reached, `mlops new` says so and names the command that locks later.
"""

from __future__ import annotations

import base64
import hashlib
import os
import socket
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest
from click.testing import CliRunner
from packaging.version import Version

from mlops_template.cli.main import main
from mlops_template.scaffold.new import new_project
from mlops_template.scaffold.wheel import wheel_name, write_wheel

BIN = Path(sys.executable).parent  # the test venv's commands: uv
PACKAGE = Path(__file__).resolve().parents[1] / "src" / "mlops_template"
WHEEL = f"vendor/{wheel_name()}"


def locked_source(project: Path, name: str = "mlops-template") -> dict:
    lock = tomllib.loads((project / "uv.lock").read_text())
    [package] = [p for p in lock["package"] if p["name"] == name]
    return package


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without the test venv's or a project's settings."""
    drop = ("VIRTUAL_ENV", "PYTHONPATH", "UV_PROJECT_ENVIRONMENT")
    env = {k: v for k, v in os.environ.items() if k not in drop and not k.startswith(("MLOPS_", "MLFLOW_", "PYTEST_"))}
    return env | {"MLFLOW_DISABLE_TELEMETRY": "true", "UV_PYTHON_DOWNLOADS": "never"} | extra


@pytest.fixture(scope="module")
def locked(tmp_path_factory) -> Path:
    """A project as `mlops new` makes it, lock included."""
    target = tmp_path_factory.mktemp("locked") / "lockbox"
    result = CliRunner().invoke(main, ["new", "lockbox", "--directory", str(target)])
    assert result.exit_code == 0, result.output
    assert "Warning" not in result.output
    return target


# -- the vendored wheel ---------------------------------------------------------------------------


def test_the_wheel_is_this_librarys_package_byte_for_byte_the_same_each_time(tmp_path):
    first, second = write_wheel(tmp_path / "a"), write_wheel(tmp_path / "b")
    assert first.name == wheel_name() and first.read_bytes() == second.read_bytes()
    with zipfile.ZipFile(first) as wheel:
        names = wheel.namelist()
        sources = sorted(
            f"mlops_template/{p.relative_to(PACKAGE).as_posix()}"
            for p in PACKAGE.rglob("*")
            if p.is_file() and "__pycache__" not in p.parts
        )
        assert sorted(n for n in names if n.startswith("mlops_template/")) == sources
        info = first.name.split("-py3")[0] + ".dist-info"
        assert "Name: mlops-template" in wheel.read(f"{info}/METADATA").decode()
        assert "mlops = mlops_template.cli.main:entry" in wheel.read(f"{info}/entry_points.txt").decode()
        for line in wheel.read(f"{info}/RECORD").decode().splitlines():  # every recorded hash holds
            name, digest, size = line.rsplit(",", 2)
            if digest:
                data = wheel.read(name)
                expected = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
                assert (digest, int(size)) == (f"sha256={expected}", len(data)), name


def test_new_commits_the_wheel_and_a_lock_that_pins_it_by_hash(locked):
    pyproject = tomllib.loads((locked / "pyproject.toml").read_text())
    version = wheel_name().split("-")[1]
    assert f"mlops-template=={version}" in pyproject["project"]["dependencies"]
    assert pyproject["tool"]["uv"]["sources"]["mlops-template"] == {"path": WHEEL}
    package = locked_source(locked)
    assert package["source"] == {"path": WHEEL} and package["version"] == version
    assert package["wheels"][0]["hash"] == f"sha256:{sha256(locked / WHEEL)}"
    assert Version(locked_source(locked, "boto3")["version"]) >= Version("1.35")  # not the ancient first release
    committed = subprocess.run(["git", "ls-files"], cwd=locked, capture_output=True, text=True).stdout.split()
    assert {"uv.lock", WHEEL} <= set(committed)


def test_a_fresh_copy_installs_from_the_lock_alone_and_passes_its_own_tests(locked, tmp_path):
    copy = tmp_path / "laptop" / "lockbox"
    subprocess.run(["git", "clone", "--quiet", str(locked), str(copy)], check=True)
    env = clean_env(PATH=os.pathsep.join(p for p in os.environ["PATH"].split(os.pathsep) if Path(p) != BIN))

    sync = subprocess.run(
        [str(BIN / "uv"), "sync", "--frozen", "--extra", "test"], cwd=copy, env=env, capture_output=True, text=True
    )
    assert sync.returncode == 0, sync.stderr[-3000:]
    python = copy / ".venv" / "bin" / "python"
    where = subprocess.run(
        [str(python), "-c", "import mlops_template; print(mlops_template.__file__)"],
        cwd=copy,
        env=env,
        capture_output=True,
        text=True,
    )
    assert Path(where.stdout.strip()).is_relative_to(copy / ".venv")  # from the wheel, not this repository
    tests = subprocess.run(
        [str(python), "-m", "pytest", "-q", "-p", "no:cacheprovider"],
        cwd=copy,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert tests.returncode == 0, tests.stdout[-3000:] + tests.stderr[-3000:]
    assert " passed" in tests.stdout and "failed" not in tests.stdout


# -- without a registry, or without a lock ------------------------------------------------------


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]  # nothing listens there once the socket is closed


def test_without_a_registry_new_makes_the_project_and_names_the_command_that_locks(tmp_path, monkeypatch):
    target = tmp_path / "offline"
    monkeypatch.setenv("UV_DEFAULT_INDEX", f"http://127.0.0.1:{closed_port()}/simple")  # an index that never answers
    monkeypatch.setenv("UV_CACHE_DIR", str(tmp_path / "empty-cache"))
    monkeypatch.setenv("UV_HTTP_RETRIES", "0")  # one failed connection says enough

    result = CliRunner().invoke(main, ["new", "offline", "--directory", str(target)])

    assert result.exit_code == 0, result.output
    command = f"UV_PYTHON_DOWNLOADS=never uv lock --directory {target}"
    [warning] = [line for line in result.output.splitlines() if line.startswith("Warning:")]
    assert warning.startswith(f"Warning: {target / 'uv.lock'} was not written: no package registry could be reached (")
    assert warning.endswith(f"; to write it later, run: {command}")
    assert not (target / "uv.lock").exists() and (target / WHEEL).is_file()
    assert subprocess.run(["git", "status", "--porcelain"], cwd=target, capture_output=True, text=True).stdout == ""

    # Online again, the command it named makes the lock.
    for name in ("UV_DEFAULT_INDEX", "UV_CACHE_DIR", "UV_HTTP_RETRIES"):
        monkeypatch.delenv(name)
    later = subprocess.run(
        [str(BIN / "uv"), "lock", "--directory", str(target)], env=clean_env(), capture_output=True, text=True
    )
    assert later.returncode == 0, later.stderr
    assert locked_source(target)["source"] == {"path": WHEEL}


def test_no_lock_skips_the_lock_quietly(tmp_path):
    result = CliRunner().invoke(main, ["new", "quick", "--directory", str(tmp_path / "quick"), "--no-lock"])
    assert result.exit_code == 0 and "Warning" not in result.output
    assert not (tmp_path / "quick" / "uv.lock").exists() and (tmp_path / "quick" / WHEEL).is_file()


# -- mlops vendor ---------------------------------------------------------------------------------


def test_vendor_replaces_an_older_library_points_pyproject_at_it_and_relocks(locked, tmp_path):
    project = tmp_path / "upgrade"
    subprocess.run(["git", "clone", "--quiet", str(locked), str(project)], check=True)
    # The project as an older library left it: its wheel and the lines naming it.
    old = project / "vendor" / "mlops_template-0.0.9-py3-none-any.whl"
    (project / WHEEL).rename(old)
    pyproject = project / "pyproject.toml"
    text = pyproject.read_text()
    pyproject.write_text(
        text.replace(WHEEL, "vendor/" + old.name).replace("mlops-template==", "mlops-template>=0.0.9,<")
    )

    result = CliRunner().invoke(main, ["vendor", "--project", str(project)])

    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == [
        f"Vendored {WHEEL} (was 0.0.9); updated uv.lock",
        "Commit vendor/, pyproject.toml and uv.lock",
    ]
    assert pyproject.read_text() == text  # the dependency and the source name the new wheel again
    assert sorted(p.name for p in (project / "vendor").iterdir()) == [wheel_name()]
    assert locked_source(project)["wheels"][0]["hash"] == f"sha256:{sha256(project / WHEEL)}"


def test_vendor_updates_the_lock_when_the_wheel_changed_under_the_same_version(locked, tmp_path):
    project = tmp_path / "rebuilt"
    subprocess.run(["git", "clone", "--quiet", str(locked), str(project)], check=True)
    wheel = project / WHEEL
    with zipfile.ZipFile(wheel, "a") as archive:  # other bytes, as a rebuilt library of the same version has
        archive.writestr("mlops_template/extra.txt", "changed")
    relock = subprocess.run(
        [str(BIN / "uv"), "lock", "--upgrade-package", "mlops-template"],
        cwd=project,
        env=clean_env(),
        capture_output=True,
    )
    assert relock.returncode == 0 and locked_source(project)["wheels"][0]["hash"] == f"sha256:{sha256(wheel)}"

    result = CliRunner().invoke(main, ["vendor", "--project", str(project)])

    assert result.exit_code == 0, result.output
    assert sha256(wheel) == sha256(locked / WHEEL)
    assert locked_source(project)["wheels"][0]["hash"] == f"sha256:{sha256(wheel)}"
    assert pins(project) == pins(locked)  # the rest of the lock as it was


def pins(project: Path) -> list[tuple[str, str, str]]:
    lock = tomllib.loads((project / "uv.lock").read_text())
    return sorted((p["name"], p["version"], str(p.get("wheels", p.get("sdist")))) for p in lock["package"])


def test_vendor_refuses_a_pyproject_that_does_not_name_the_vendored_library(tmp_path):
    project = new_project("bare", directory=tmp_path / "bare", lock=False)
    pyproject = project / "pyproject.toml"
    pyproject.write_text(pyproject.read_text().replace("mlops-template = { path", "other = { path"))

    result = CliRunner().invoke(main, ["vendor", "--project", str(project), "--no-lock"])

    version = wheel_name().split("-")[1]
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert result.output.strip() == (
        f'Error: {pyproject} does not name the vendored library; add "mlops-template=={version}" to [project] '
        f'dependencies and, under [tool.uv.sources], mlops-template = {{ path = "{WHEEL}" }}'
    )
