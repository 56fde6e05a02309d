"""A failed step's traceback: kept (redacted) as a file and as an artifact of its run, and where it went said."""

from __future__ import annotations

import os
import stat
import tempfile
import traceback
from pathlib import Path
from typing import TYPE_CHECKING

from mlops_template.config.load import Config
from mlops_template.errors import MlopsError
from mlops_template.redact import redact_text
from mlops_template.tracking.failures import server_lost, store_failures

if TYPE_CHECKING:
    from mlops_template.pipeline.context import StepContext


def record_failure(ctx: StepContext, exc: BaseException, config: Config, run_id: str, step: str) -> str:
    """Keep a failed step's traceback as a file and a run artifact, and say where it went.

    Runs while the step's own error is being reported, so a store or file
    system failing here is noted, never raised: it must not hide that error.
    """
    import mlflow

    secondary = (MlopsError, *store_failures())
    text = redact_text("".join(traceback.format_exception(exc)))
    try:
        ctx._abandon(exc)
    except secondary as other:
        text += redact_text(f"\nRecording that nothing was registered also failed: {_first_line(other)}\n")
    try:
        where = f"full log: {_save_traceback(config, run_id, step, text)}"
    except OSError as other:
        where = f"full log not saved: {other}; --verbose shows the traceback"
    try:
        mlflow.log_text(text, f"{step}.error.log")
    except secondary as other:
        lost = "the tracking store failed too" if server_lost(other) else _first_line(other)
        where += f"; not saved in the run: {lost}"
    return where


def _save_traceback(config: Config, run_id: str, step: str, text: str) -> Path:
    """Write a failed step's (redacted) traceback to `.mlops/logs/<run>-<step>.log` in the project; its path.

    Where the project folder is read-only (a pod running a read-only image),
    it goes under the temp folder instead, into `mlops-logs-<uid>/` that only
    this user may read, or a fresh folder of its own if that one is not
    private. Raises OSError only when none of them can be written.
    """
    name = f"{run_id}-{step}.log"
    try:
        folder = config.root / ".mlops" / "logs"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text, encoding="utf-8")
        return folder / name
    except OSError:
        pass
    folder = _private_folder(Path(tempfile.gettempdir()) / f"mlops-logs-{os.getuid()}")
    (folder / name).write_text(text, encoding="utf-8")
    return folder / name


def _private_folder(folder: Path) -> Path:
    """`folder`, made readable by this user only; a fresh one instead if someone else owns it or may read it."""
    try:
        folder.mkdir(mode=0o700, exist_ok=True)
        found = folder.lstat()
        if stat.S_ISDIR(found.st_mode) and found.st_uid == os.getuid() and not found.st_mode & 0o077:
            return folder
    except OSError:
        pass
    return Path(tempfile.mkdtemp(prefix="mlops-logs-"))  # mkdtemp makes it 0700


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0] if lines else ''}"
