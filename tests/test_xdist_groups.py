"""The suite's own promise to itself: tests of one `xdist_group` run on one worker under `--dist loadgroup`.

The image tests share one build and each build removes the tags earlier ones left; the Dask tests share one
external cluster. Spread over workers, they would build twice and remove each other's images. pytest-xdist
keeps a group together by renaming the tests' node ids, which some pytest releases ignore (9.2: ids come
from `_id`), so the pin on pytest is checked here, in a pytest of its own.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

GROUPED = """
import os, pytest
pytestmark = [pytest.mark.xdist_group("together")]

@pytest.mark.parametrize("i", range(6))
def test_grouped(i):
    with open(os.environ["WORKERS_FILE"], "a") as f:
        f.write(os.environ["PYTEST_XDIST_WORKER"] + "\\n")
"""
LOOSE = """
import pytest

@pytest.mark.parametrize("i", range(6))
def test_loose(i):
    pass
"""


def test_a_group_runs_on_one_worker(tmp_path: Path, monkeypatch):
    (tmp_path / "test_grouped.py").write_text(GROUPED)
    (tmp_path / "test_loose.py").write_text(LOOSE)
    workers = tmp_path / "workers.txt"
    monkeypatch.setenv("WORKERS_FILE", str(workers))
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-n", "3", "--dist", "loadgroup", "-p", "no:cacheprovider", "."],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    seen = workers.read_text().split()
    assert len(seen) == 6 and len(set(seen)) == 1, seen
