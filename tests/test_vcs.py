"""git runs only through `mlops_template.vcs`: refs are full SHAs, paths follow `--`, every failure is one VcsError."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from mlops_template import vcs
from mlops_template.errors import MlopsError, VcsError

IDENTITY = {"user.name": "t", "user.email": "t@localhost"}


def git(root: Path, *args: str) -> str:
    command = ["git", "-c", "user.name=t", "-c", "user.email=t@localhost", *args]
    return subprocess.run(command, cwd=root, check=True, capture_output=True, text=True).stdout.strip()


@pytest.fixture
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A repository with one commit holding `a.txt`."""
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))
    root = tmp_path / "repo"
    root.mkdir()
    (root / "a.txt").write_text("a\n")
    vcs.init_commit(root, "start", identity=IDENTITY)
    return root


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """Every git command line vcs starts, answered with success and no output instead of being run."""
    seen: list[list[str]] = []

    def fake_run(command, **kwargs):
        seen.append(list(command))
        return subprocess.CompletedProcess(command, 0, b"", b"")

    monkeypatch.setattr(vcs.subprocess, "run", fake_run)
    return seen


SHA = "0123456789abcdef0123456789abcdef01234567"
NOT_COMMITS = ["--output=/tmp/x", "-p", "abc1234", SHA.upper(), "g" * 40, SHA + "\n", f"{SHA}..HEAD", "HEAD", ""]


@pytest.mark.parametrize("ref", NOT_COMMITS)
def test_a_ref_that_is_not_a_full_sha_is_refused_without_running_git(calls, tmp_path, ref):
    assert not vcs.is_commit(ref)
    for use in (
        lambda: vcs.check_commit(ref),
        lambda: vcs.has_commit(tmp_path, ref),
        lambda: vcs.changed_files(tmp_path, SHA, ref),
        lambda: vcs.changed_files(tmp_path, ref, SHA),
        lambda: vcs.worktree_add(tmp_path, tmp_path / "tree", ref),
    ):
        with pytest.raises(VcsError, match="is not a commit SHA"):
            use()
    assert calls == []


def test_a_full_sha_is_passed_after_the_options(calls, tmp_path):
    vcs.worktree_add(tmp_path, tmp_path / "-tree", SHA)
    vcs.changed_files(tmp_path, SHA, SHA[::-1])
    vcs.diff(tmp_path, ["--output=/tmp/x", "src/a.py"])
    vcs.worktree_remove(tmp_path, tmp_path / "-tree")
    worktree, changed, diff, remove, _prune = calls
    assert worktree[worktree.index("--") + 1 :] == [str(tmp_path / "-tree"), SHA]
    assert changed[-3:] == [SHA, SHA[::-1], "--"]
    assert diff[diff.index("--") + 1 :] == ["--output=/tmp/x", "src/a.py"]
    assert remove[remove.index("--") + 1 :] == [str(tmp_path / "-tree")]


def test_a_path_that_looks_like_an_option_is_a_path(repo, tmp_path):
    written = tmp_path / "written"
    (repo / "a.txt").write_text("b\n")
    assert vcs.diff(repo, [f"--output={written}"]) == b""  # no such file changed
    assert not written.exists()
    assert b"+b" in vcs.diff(repo, ["a.txt"])


def test_the_repository_answers(repo):
    head = vcs.head_commit(repo)
    assert vcs.is_commit(head) and head == git(repo, "rev-parse", "HEAD")
    assert vcs.toplevel(repo / ".") == repo.resolve()
    assert vcs.status(repo) == []
    assert vcs.has_commit(repo, head)
    assert not vcs.has_commit(repo, SHA)
    git(repo, "mv", "a.txt", "b.txt")
    (repo / "new.txt").write_text("n\n")
    assert sorted(vcs.status(repo)) == [("??", "new.txt"), ("R ", "a.txt"), ("R ", "b.txt")]
    git(repo, "commit", "--quiet", "-m", "rename")
    assert vcs.changed_files(repo, head, vcs.head_commit(repo)) == [("D", "a.txt"), ("A", "b.txt")]


def test_a_worktree_is_checked_out_patched_and_removed(repo, tmp_path):
    head = vcs.head_commit(repo)
    (repo / "a.txt").write_text("changed\n")
    patch = vcs.diff(repo, ["a.txt"])
    tree = tmp_path / "tree"
    vcs.worktree_add(repo, tree, head)
    assert (tree / "a.txt").read_text() == "a\n"
    vcs.apply(tree, patch)
    assert (tree / "a.txt").read_text() == "changed\n"
    vcs.worktree_remove(repo, tree)
    assert not tree.exists()
    assert str(tree) not in git(repo, "worktree", "list")


def test_a_folder_outside_any_repository_is_one_error(tmp_path, monkeypatch):
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))
    with pytest.raises(VcsError, match="is not in a git repository") as raised:
        vcs.head_commit(tmp_path)
    assert isinstance(raised.value, MlopsError)
    assert raised.value.reason.startswith("fatal: not a git repository") and raised.value.returncode == 128
    with pytest.raises(VcsError, match="is not in a git repository"):
        vcs.toplevel(tmp_path)


def test_a_repository_without_a_commit_says_so(tmp_path, monkeypatch):
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))
    git(tmp_path, "init", "--quiet")
    with pytest.raises(VcsError, match="has no commit yet") as raised:
        vcs.head_commit(tmp_path)
    assert raised.value.reason == ""


def test_without_git_installed_every_call_is_one_error(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(VcsError, match="git is not installed") as raised:
        vcs.head_commit(tmp_path)
    assert raised.value.missing and raised.value.returncode is None
    with pytest.raises(VcsError) as raised:  # not taken for "no such commit"
        vcs.has_commit(tmp_path, SHA)
    assert raised.value.missing


def test_a_git_that_hangs_is_stopped(tmp_path, monkeypatch):
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "git").write_text(f"#!/bin/sh\nexec {shutil.which('sleep')} 5\n")
    (fake / "git").chmod(0o755)
    monkeypatch.setenv("PATH", str(fake))
    with pytest.raises(VcsError, match=r"git status in .* did not finish within 0.2 s") as raised:
        vcs.run_git(["status"], tmp_path, timeout=0.2)
    assert raised.value.returncode is None and not raised.value.missing


def test_a_failing_command_reports_gits_first_line(repo):
    with pytest.raises(VcsError, match=r"git cat-file failed in .*: fatal: ") as raised:
        vcs.run_git(["cat-file", "-p", SHA], repo, timeout=10)
    assert raised.value.returncode == 128


def test_the_identity_stands_in_only_where_none_is_configured(tmp_path, monkeypatch):
    for name in ("GIT_AUTHOR_NAME", "GIT_AUTHOR_EMAIL", "GIT_COMMITTER_NAME", "GIT_COMMITTER_EMAIL", "EMAIL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(tmp_path / "global"))
    (tmp_path / "global").write_text("[user]\n\tname = Someone\n")
    project = tmp_path / "project"
    project.mkdir()
    (project / "a.txt").write_text("a\n")
    vcs.init_commit(project, "start", identity={"user.name": "mlops", "user.email": "mlops@localhost"})
    assert git(project, "log", "-1", "--format=%an <%ae> %s") == "Someone <mlops@localhost> start"
    assert vcs.config_value(project, "user.name") == "Someone"
    assert vcs.config_value(project, "user.email") is None
    assert git(project, "branch", "--show-current") == "main"


@pytest.mark.parametrize(
    ("value", "state"),
    [
        ("", None),
        (SHA, vcs.GitState(SHA, False)),
        (f" {SHA}-dirty\n", vcs.GitState(SHA, True)),
    ],
)
def test_an_image_names_its_commit(monkeypatch, value, state):
    monkeypatch.setenv(vcs.IMAGE_COMMIT, value)
    assert vcs.image_commit() == state


@pytest.mark.parametrize("value", ["latest", SHA[:12], SHA.upper(), f"{SHA}-clean", f"--output={SHA}"])
def test_an_image_tag_that_is_not_a_commit_is_refused(monkeypatch, value):
    monkeypatch.setenv(vcs.IMAGE_COMMIT, value)
    with pytest.raises(VcsError, match="MLOPS_GIT_COMMIT=.* is not a commit SHA"):
        vcs.image_commit()


@pytest.mark.parametrize(
    ("tag", "expected"),
    [("a" * 40, True), ("a" * 40 + "-dirty", True), ("latest", False), ("A" * 40, False), ("a" * 40 + "-x", False)],
)
def test_an_image_tag_names_its_commit_only_as_a_full_sha(tag, expected):
    assert vcs.is_built_from(tag) is expected
