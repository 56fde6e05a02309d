"""Every git command the library runs, and the one way their failures are reported.

git runs with a timeout and its output captured. Whatever goes wrong (git
missing, the folder not in a repository, a timeout, a non-zero exit) raises a
:class:`VcsError` that names it; each caller words it for its own user. A
commit read from a run's tags, an image or the command line is accepted only
as a full SHA (40 lowercase hex digits), checked before git runs, so it can
never be taken for an option; paths always follow `--`.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from mlops_template.errors import VcsError

# Where a process without a git repository (an image) learns the commit it runs.
IMAGE_COMMIT = "MLOPS_GIT_COMMIT"

_SHA = re.compile(r"[0-9a-f]{40}")
# How `scripts/build_image.sh` tags an image: the commit, `-dirty` when it built uncommitted changes.
_BUILT_FROM = re.compile(r"([0-9a-f]{40})(-dirty)?")


@dataclass(frozen=True)
class GitState:
    """The commit code came from (`none` when unknown) and whether the work tree differed from it (None: unknown)."""

    commit: str
    dirty: bool | None


def is_commit(ref: str) -> bool:
    """Whether `ref` is a full commit SHA: 40 lowercase hex digits, nothing git could read as an option or a range."""
    return _SHA.fullmatch(ref) is not None


def is_built_from(tag: str) -> bool:
    """Whether an image tag names the commit it was built from: a full SHA, `-dirty` when uncommitted changes went in."""
    return _BUILT_FROM.fullmatch(tag) is not None


def check_commit(ref: str) -> str:
    """`ref` when it is a full commit SHA; otherwise a VcsError, and git is not run."""
    if not is_commit(ref):
        reason = f"{ref[:80]!r} is not a commit SHA"
        raise VcsError(f"{reason}; give the full 40-character SHA", reason=reason)
    return ref


def run_git(
    args: Sequence[str],
    cwd: Path,
    *,
    timeout: float,
    input: bytes | None = None,
    config: Mapping[str, str] | None = None,
) -> bytes:
    """What `git <args>` run in `cwd` writes to stdout; a VcsError when it cannot run, fails or takes over `timeout` s.

    `config` is passed as `-c key=value` settings for this command only.
    """
    command = args[0] if args else ""
    settings = [part for key, value in (config or {}).items() for part in ("-c", f"{key}={value}")]
    try:
        done = subprocess.run(["git", *settings, *args], cwd=cwd, input=input, capture_output=True, timeout=timeout)
    except FileNotFoundError as exc:
        if exc.filename not in (None, "git"):  # the folder, not git, is missing
            raise VcsError(f"git cannot run in {cwd}: no such folder", reason=str(exc)) from exc
        raise VcsError("git is not installed; install git", reason="git is not installed", missing=True) from exc
    except subprocess.TimeoutExpired as exc:
        raise VcsError(
            f"git {command} in {cwd} did not finish within {timeout:g} s; check the repository there",
            reason=f"git {command} did not finish within {timeout:g} s",
        ) from exc
    except OSError as exc:
        raise VcsError(f"git cannot run in {cwd}: {exc.strerror or exc}", reason=str(exc)) from exc
    if done.returncode != 0:
        lines = done.stderr.decode("utf-8", "replace").strip().splitlines()
        reason = lines[0] if lines else ""
        if "not a git repository" in reason:
            message = f"{cwd} is not in a git repository; run the command in the project's repository"
        else:
            message = f"git {command} failed in {cwd}: {reason or f'exit status {done.returncode}'}"
        raise VcsError(message, reason=reason, returncode=done.returncode)
    return done.stdout


def _text(out: bytes) -> str:
    return out.decode("utf-8", "surrogateescape").strip()


def head_commit(root: Path) -> str:
    """The commit checked out in `root`."""
    try:
        return _text(run_git(["rev-parse", "--verify", "--quiet", "HEAD^{commit}"], root, timeout=10))
    except VcsError as exc:
        if exc.returncode == 1 and not exc.reason:  # a repository, but nothing committed
            raise VcsError(
                f"{root}: the repository has no commit yet; commit the code there", returncode=exc.returncode
            ) from exc
        raise


def toplevel(root: Path) -> Path:
    """The top folder of the repository holding `root`."""
    return Path(os.fsdecode(run_git(["rev-parse", "--show-toplevel"], root, timeout=10).strip())).resolve()


def status(root: Path) -> list[tuple[str, str]]:
    """The work tree's changed and untracked files as (two-letter status, path); a rename or copy lists its source too."""
    out = run_git(["status", "--porcelain=v1", "-z", "--untracked-files=normal"], root, timeout=30)
    entries = out.decode("utf-8", "surrogateescape").split("\0")
    found, i = [], 0
    while i < len(entries):
        entry = entries[i]
        i += 1
        if len(entry) < 4:
            continue
        code, path = entry[:2], entry[3:]
        if code[0] in "RC" and i < len(entries):  # the next entry is its source
            found.append((code, entries[i]))
            i += 1
        found.append((code, path))
    return found


def diff(root: Path, paths: Sequence[str]) -> bytes:
    """The binary-safe diff of `paths` in the work tree against HEAD: what `git apply` takes."""
    return run_git(["diff", "HEAD", "--binary", "--no-color", "--no-ext-diff", "--", *paths], root, timeout=30)


def has_commit(repo: Path, commit: str) -> bool:
    """Whether the repository at `repo` holds `commit` (a full SHA)."""
    try:
        run_git(["cat-file", "-e", f"{check_commit(commit)}^{{commit}}"], repo, timeout=10)
    except VcsError as exc:
        if exc.returncode is None:  # git did not answer: not the same as "no"
            raise
        return False
    return True


def changed_files(root: Path, commit_a: str, commit_b: str) -> list[tuple[str, str]]:
    """The files that differ between two commits (full SHAs), as (status letter, path)."""
    args = ["diff", "--name-status", "--no-renames", check_commit(commit_a), check_commit(commit_b), "--"]
    files = []
    for line in _text(run_git(args, root, timeout=30)).splitlines():
        letter, _, path = line.partition("\t")
        files.append((letter, path))
    return files


def worktree_add(repo: Path, tree: Path, commit: str) -> None:
    """Check `commit` (a full SHA) out, detached, in a new worktree at `tree`."""
    run_git(["worktree", "add", "--detach", "--quiet", "--", str(tree), check_commit(commit)], repo, timeout=120)


def apply(tree: Path, patch: bytes) -> None:
    """Apply `patch` (a binary-safe diff) to the work tree at `tree`."""
    run_git(["apply", "--binary", "--whitespace=nowarn", "-"], tree, timeout=120, input=patch)


def worktree_remove(repo: Path, tree: Path) -> None:
    """Remove the worktree at `tree` and forget it; a failure leaves it for `git worktree prune` to find."""
    for args in (["worktree", "remove", "--force", "--", str(tree)], ["worktree", "prune"]):
        try:
            run_git(args, repo, timeout=120)
        except VcsError:
            pass


def config_value(root: Path, key: str) -> str | None:
    """The git setting `key` as seen in `root`; None when it is not set."""
    try:
        return _text(run_git(["config", "--get", "--", key], root, timeout=10))
    except VcsError as exc:
        if exc.returncode is None:
            raise
        return None


def init_commit(target: Path, message: str, *, identity: Mapping[str, str], tag: str | None = None) -> None:
    """Make `target` a repository (branch `main`) whose first commit holds all its files, tagged `tag` if given.

    `identity` (`user.name`, `user.email`) stands in for each one the user has not configured.
    """
    run_git(["init", "--quiet", "--initial-branch=main"], target, timeout=60)
    commit_all(target, message, identity=identity, tag=tag)


def commit_all(root: Path, message: str, *, identity: Mapping[str, str], tag: str | None = None) -> None:
    """Commit every change in `root` (new, changed and removed files), tagged `tag` if given."""
    run_git(["add", "--all"], root, timeout=300)
    missing = {key: value for key, value in identity.items() if config_value(root, key) is None}
    run_git(["commit", "--quiet", "--allow-empty", "-m", message], root, timeout=300, config=missing)
    if tag is not None:
        run_git(["tag", tag], root, timeout=30)


def clone(source: Path, target: Path) -> None:
    """A private copy of `source`'s repository, its checked-out commit in `target` (nothing shared but objects)."""
    run_git(["clone", "--quiet", "--no-local", str(source), str(target)], source, timeout=300)


def image_commit() -> GitState | None:
    """In an image, which has no `.git`: the commit it was built from, as `MLOPS_GIT_COMMIT` names it.

    `scripts/build_image.sh` tags the image with the full commit SHA (`-dirty`
    when it built uncommitted changes); the DAG's pods and `scripts/run_image*.sh`
    pass that tag in. None when it is not set; a VcsError when it is not a commit.
    """
    value = os.environ.get(IMAGE_COMMIT, "").strip()
    if not value:
        return None
    found = _BUILT_FROM.fullmatch(value)
    if found is None:
        reason = f"{IMAGE_COMMIT}={value[:80]!r} is not a commit SHA"
        raise VcsError(f"{reason}; give the full 40-character SHA the image was built from", reason=reason)
    return GitState(commit=found.group(1), dirty=found.group(2) is not None)
