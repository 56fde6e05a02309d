"""`scripts/test.sh` installs PostgreSQL from the distribution's packages when it is absent, and says so when it cannot.

The functions of `scripts/_postgres.sh` run in bash with a PATH of their own. A
package cannot really be installed by a test, so `apt-get` (and `sudo`, for a
user other than root) are stand-ins that record their arguments; "installing"
puts an `initdb` where the distribution's package would.
"""

from __future__ import annotations

import shutil
import stat
import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "_postgres.sh"


def executable(path: Path, body: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"#!/bin/bash\n{body}\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


@pytest.fixture
def machine(tmp_path: Path) -> dict[str, Path]:
    """A PATH holding only what the functions use (`id`, `env`), and an empty /usr/lib/postgresql."""
    bin_dir, lib = tmp_path / "bin", tmp_path / "lib" / "postgresql"
    bin_dir.mkdir()
    lib.mkdir(parents=True)
    for tool in ("id", "env"):
        (bin_dir / tool).symlink_to(shutil.which(tool))
    return {"bin": bin_dir, "lib": lib, "log": tmp_path / "apt.log"}


def bash(machine: dict[str, Path], command: str) -> subprocess.CompletedProcess:
    env = {"PATH": str(machine["bin"]), "PG_LIBDIR": str(machine["lib"])}
    script = f"set -euo pipefail; source {SCRIPT}; {command}"
    return subprocess.run(["/bin/bash", "-c", script], env=env, capture_output=True, text=True, timeout=30)


def package_manager(machine: dict[str, Path], *, works: bool) -> None:
    """Stand-ins for apt-get (recording each call; installing puts initdb in place, or fails) and for sudo -n."""
    initdb = machine["lib"] / "15" / "bin" / "initdb"
    mkdir, touch, chmod = (shutil.which(tool) for tool in ("mkdir", "touch", "chmod"))  # PATH lacks them
    install = f"{mkdir} -p {initdb.parent} && {touch} {initdb} && {chmod} +x {initdb}" if works else "exit 100"
    executable(
        machine["bin"] / "apt-get",
        f'echo "$DEBIAN_FRONTEND apt-get $*" >> {machine["log"]}\n[ "$1" = install ] || exit 0\n{install}',
    )
    executable(machine["bin"] / "sudo", '[ "$1" = -n ] && shift\nexec "$@"')


def test_postgres_is_found_on_path_or_under_the_distributions_folder(machine):
    assert bash(machine, "postgres_present").returncode == 1
    executable(machine["lib"] / "15" / "bin" / "initdb", "exit 0")
    assert bash(machine, "postgres_present").returncode == 0
    shutil.rmtree(machine["lib"] / "15")
    executable(machine["bin"] / "initdb", "exit 0")
    assert bash(machine, "postgres_present").returncode == 0


def test_present_postgres_installs_nothing(machine):
    executable(machine["bin"] / "initdb", "exit 0")
    package_manager(machine, works=True)
    result = bash(machine, "ensure_postgres")
    assert (result.returncode, result.stderr) == (0, "")
    assert not machine["log"].exists()


def test_absent_postgres_is_installed_from_the_distribution(machine):
    package_manager(machine, works=True)
    result = bash(machine, "ensure_postgres && postgres_present")
    assert result.returncode == 0, result.stderr
    assert machine["log"].read_text().splitlines() == [
        "noninteractive apt-get update -qq",
        "noninteractive apt-get install -y -qq --no-install-recommends postgresql",
    ]
    assert "PostgreSQL" not in result.stderr


@pytest.mark.parametrize("how", ["the package manager fails", "there is no package manager"])
def test_postgres_that_cannot_be_installed_is_one_line_saying_what_to_install(machine, how):
    if how == "the package manager fails":
        package_manager(machine, works=False)
    result = bash(machine, "ensure_postgres; echo carried on")
    assert result.returncode == 0
    assert result.stdout == "carried on\n"  # the suite still runs; the tests needing PostgreSQL fail, saying why
    hint = [line for line in result.stderr.splitlines() if "PostgreSQL" in line]
    assert hint == [
        "PostgreSQL is missing and could not be installed: install the 'postgresql' package (initdb, pg_ctl) "
        "as root; until then the tests that need it fail"
    ]
