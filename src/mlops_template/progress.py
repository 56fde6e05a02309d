"""Progress of long work on a table, shown in the terminal and nowhere else.

Reading, writing, hashing and profiling a large table take seconds to minutes,
and a step silent that long looks hung. :func:`activity` shows one transient
line on stderr (what is being done to what, the bytes done so far, the time
taken) once the work has lasted :data:`DELAY` seconds, and erases it when the
work ends. When stderr is not a terminal (a pod's log, CI, a pipe) nothing is
shown and nothing is spent: no thread, no import of rich.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

DELAY = 0.5  # seconds of work before its line appears, so quick work never flickers

_lock = threading.RLock()
_display: Any = None  # the process's one rich Progress while any activity is under way
_started = False
_active = 0


def _nothing(n: int) -> None:
    """The advance of an activity nobody sees."""


def shown() -> bool:
    """Whether activities are drawn: stderr is a terminal."""
    isatty = getattr(sys.stderr, "isatty", None)
    return bool(isatty and isatty())


@contextmanager
def activity(what: str, *, total: int | None = None) -> Iterator[Callable[[int], None]]:
    """Show `what` (e.g. "hashing data/raw/churn.csv") while the block runs.

    Yields `advance(n)`: n more bytes done, of `total` when known (a bar), or
    counted up without one. Safe from several threads at once: each activity is
    a line of its own.
    """
    if not shown():
        yield _nothing
        return
    display = _open()
    task = display.add_task(what, total=total, visible=False)
    timer = threading.Timer(DELAY, _show, (display, task))
    timer.daemon = True
    if DELAY > 0:
        timer.start()
    else:
        _show(display, task)
    try:
        yield lambda n: display.advance(task, n)
    finally:
        timer.cancel()
        _close(display, task)


def _open() -> Any:
    global _display, _active
    with _lock:
        if _display is None:
            _display = _progress()
        _active += 1
        return _display


def _show(display: Any, task: Any) -> None:
    global _started
    with _lock:
        if display is not _display or task not in display.task_ids:
            return
        display.update(task, visible=True)
        if not _started:
            display.start()
            _started = True
        display.refresh()  # drawn at once, however soon it ends


def _close(display: Any, task: Any) -> None:
    global _display, _active, _started
    with _lock:
        display.remove_task(task)
        _active -= 1
        if _active == 0:
            if _started:
                display.stop()
            _display, _started = None, False


def _progress() -> Any:
    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    class Amount(DownloadColumn):
        """Bytes done (of the total when known); nothing before the first byte is counted."""

        def render(self, task):  # noqa: ANN001, ANN202
            if not task.completed:
                return ""
            return super().render(task)

    return Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(bar_width=20),
        Amount(),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        transient=True,
    )
