"""A past commit's code, checked out for a reproduction: a temporary worktree (with the run's recorded diff
applied), and the project's pipeline imported from it instead of today's.
"""

from __future__ import annotations

import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlops_template import vcs
from mlops_template.config.load import Config
from mlops_template.errors import RunError, VcsError

if TYPE_CHECKING:
    from mlops_template.pipeline.pipeline import Pipeline


@contextmanager
def worktree(repo: Path, commit: str, diff: bytes | None) -> Iterator[Path]:
    """A temporary detached worktree of `commit`, with `diff` applied; removed afterwards."""
    with tempfile.TemporaryDirectory(prefix="mlops-reproduce-") as tmp:
        tree = Path(tmp) / "code"

        def git(command: str, action: Callable[..., None], *args: Any) -> None:
            try:
                action(*args)
            except VcsError as exc:
                raise RunError(
                    f"git {command} failed while preparing the code of {commit[:12]}: "
                    f"{exc.reason or exc.returncode}; check the repository at {repo}"
                ) from exc

        git("worktree", vcs.worktree_add, repo, tree, commit)
        try:
            if diff:
                git("apply", vcs.apply, tree, diff)
            yield tree
        finally:
            vcs.worktree_remove(repo, tree)


@contextmanager
def pipeline_at(config: Config, code_root: Path) -> Iterator[Pipeline]:
    """The project's pipeline imported from `code_root`, with whatever was imported before put back afterwards.

    The package is imported afresh (a process may hold today's version of it),
    from the worktree's `src/` only.
    """
    from mlops_template.pipeline.loader import load_pipeline

    package = config.package

    def ours(module: str) -> bool:
        return module == package or module.startswith(package + ".")

    saved = {k: sys.modules.pop(k) for k in list(sys.modules) if ours(k)}
    saved_path = list(sys.path)
    today = str((config.root / "src").resolve())
    sys.path[:] = [p for p in sys.path if str(Path(p or ".").resolve()) != today]
    try:
        yield load_pipeline(replace(config, root=code_root))
    finally:
        for module in [k for k in sys.modules if ours(k)]:
            del sys.modules[module]
        sys.modules.update(saved)
        sys.path[:] = saved_path
