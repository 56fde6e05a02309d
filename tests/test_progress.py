"""Long work on a table shows what it is doing in a terminal, and nothing anywhere else."""

from __future__ import annotations

import fcntl
import os
import struct
import subprocess
import sys
import termios
import threading
import time
from pathlib import Path

import pytest

from mlops_template import progress
from mlops_template.data.snapshots import SnapshotStore
from mlops_template.storage.local import LocalStorage


class Terminal:
    """A pseudo-terminal as this process's stderr, with everything written to it collected by a reader thread."""

    def __init__(self) -> None:
        self.master, slave = os.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 200, 0, 0))  # 40 rows, 200 columns
        self.file = open(slave, "w", buffering=1, encoding="utf-8")  # noqa: SIM115
        self._chunks: list[bytes] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        while True:
            try:
                chunk = os.read(self.master, 65536)
            except OSError:  # the other end closed
                return
            if not chunk:
                return
            self._chunks.append(chunk)

    def __enter__(self) -> Terminal:
        self._stderr, sys.stderr = sys.stderr, self.file
        return self

    def __exit__(self, *exc: object) -> None:
        sys.stderr = self._stderr

    def text(self) -> str:
        self.file.close()
        self._reader.join(timeout=10)
        os.close(self.master)
        return b"".join(self._chunks).decode("utf-8", "replace")


@pytest.fixture
def terminal(monkeypatch: pytest.MonkeyPatch) -> Terminal:
    """A terminal to make stderr inside the test body (pytest sets its own stderr again after fixtures run)."""
    monkeypatch.setattr(progress, "DELAY", 0.0)
    return Terminal()


def test_storing_a_file_in_a_terminal_says_what_it_is_doing_and_takes_its_lines_down(
    terminal: Terminal, tmp_path: Path
):
    table = tmp_path / "events.csv"
    table.write_text("a,b\n" + "".join(f"{i},{i % 7}\n" for i in range(50_000)))
    store = SnapshotStore(LocalStorage(tmp_path / "store"))

    with terminal:
        stored = store.add_file(table, "events")
        _, df = store.read(stored.snapshot)
    shown = terminal.text()

    assert stored.written and len(df) == 50_000
    for line in ("storing events.csv", "profiling events.csv", f"reading {stored.snapshot.ref}", "parsing events:"):
        assert line in shown
    assert progress._display is None  # every activity ended and the display stopped


def test_bytes_done_are_counted_against_the_total(terminal: Terminal):
    with terminal, progress.activity("copying churn@abc", total=4 << 20) as advance:
        advance(1 << 20)
        time.sleep(0.5)  # the display redraws ten times a second
    shown = terminal.text()
    assert "copying churn@abc" in shown
    assert "1.0/4.2 MB" in shown


def test_an_activity_that_ends_before_the_delay_draws_nothing():
    term = Terminal()
    with term, progress.activity("hashing quick.csv"):
        pass
    assert term.text() == ""
    assert progress._display is None


def test_off_a_terminal_nothing_is_shown_and_rich_is_not_loaded(tmp_path: Path):
    script = (
        "import sys, time\n"
        "from mlops_template import progress\n"
        "progress.DELAY = 0.0\n"
        "with progress.activity('hashing big.csv', total=100) as advance:\n"
        "    advance(50); time.sleep(0.3)\n"
        "print('rich' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert done.stderr == ""
    assert done.stdout.strip() == "False"
