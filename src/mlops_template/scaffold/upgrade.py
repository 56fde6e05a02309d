"""`mlops upgrade`: bring a newer template into a project as a three-way merge that keeps the team's edits.

The old template is the one inside the wheel the project vendors (`vendor/`),
the exact library that made it; the new one is the installed library's, or the
one inside `--to WHEEL`. Copier merges only between versions of a template under
git, so both go into a temporary repository as two tagged commits, and the
merge runs in a private clone of the project. What changed there is copied back
into the project's work tree: nothing is committed, and a conflict is left as
copier's markers and listed. Then `vendor/` and `uv.lock` follow, as
`mlops vendor` does.
"""

from __future__ import annotations

import shutil
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from mlops_template import vcs
from mlops_template.errors import ProjectError, VcsError
from mlops_template.scaffold.answers import ANSWERS_FILE, read_answers, template_digest, write_answers
from mlops_template.scaffold.new import template_path, version_answers
from mlops_template.scaffold.vendor import VENDOR, vendor_library
from mlops_template.scaffold.wheel import library_version, wheel_version

_TEMPLATE = "mlops_template/scaffold/template/"  # the template's folder inside a wheel
_OLD, _NEW = "1.0.0", "2.0.0"  # the temporary repository's tags: copier orders versions by them
_IDENTITY = {"user.name": "mlops", "user.email": "mlops@localhost"}
_CONFLICT = "<<<<<<< before updating"


@dataclass
class Upgrade:
    """What `upgrade` did: the versions, the files it changed, those left with conflict markers, any note."""

    old: str
    new: str
    changed: list[str] = field(default_factory=list)
    conflicts: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    up_to_date: bool = False


def upgrade(root: Path, *, to: Path | None = None, lock: bool = True) -> Upgrade:
    """Merge the new template into the project at `root`; see the module's docstring."""
    from packaging.version import Version

    _check_clean(root)
    wheel = _vendored_wheel(root)
    old_version = wheel_version(wheel)
    new_version = wheel_version(to) if to is not None else library_version()
    if to is not None:
        _template_files(to)  # refused now if it holds no template
    if Version(new_version) < Version(old_version):
        raise ProjectError(
            f"{to} is mlops-template {new_version}, older than the project's {old_version} ({wheel.name}); "
            "downgrades are not supported: check out the project's earlier commit instead"
        )
    answers = read_answers(root)
    notes = []
    if str(answers.get("_src_path", "")).startswith("/"):
        notes.append(
            f"{ANSWERS_FILE} named the template by a path on the machine that made the project; "
            "it now records the template's version and digest instead"
        )
    with tempfile.TemporaryDirectory(prefix="mlops-upgrade-") as tmp:
        work = Path(tmp)
        old_template = _extract(wheel, work / "old")
        new_template = _extract(to, work / "new") if to is not None else template_path()
        digest = template_digest(new_template)
        if template_digest(old_template) == digest:
            return Upgrade(old_version, new_version, up_to_date=True)
        repository = _template_repository(old_template, new_template, work / "template")
        clone = work / "project"
        vcs.clone(root, clone)
        recorded = {**version_answers(old_version), **answers, "mlops_version": old_version}
        write_answers(clone, recorded, digest=template_digest(old_template), source=(str(repository), _OLD))
        vcs.commit_all(clone, "the template this project was made from", identity=_IDENTITY)
        _merge(clone, repository, new_version)
        changed, removed = _changes(clone)
        _refuse_overwrites(root, changed)
        for path in changed:
            target = root / path
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(clone / path, target)
        for path in removed:
            (root / path).unlink(missing_ok=True)
    merged = read_answers(root) | {"mlops_version": new_version}
    write_answers(root, merged, digest=digest)
    vendor_library(root, lock=lock and (root / "uv.lock").is_file(), wheel=to)
    conflicts = sorted(p for p in changed if _has_markers(root / p))
    return Upgrade(old_version, new_version, sorted({*changed, *removed}), conflicts, notes)


def _check_clean(root: Path) -> None:
    try:
        changes = [path for code, path in vcs.status(root) if code != "??"]
    except VcsError as exc:
        raise ProjectError(f"{root}: {exc}; `mlops upgrade` merges into a project under git") from exc
    if changes:
        shown = ", ".join(changes[:5]) + (", …" if len(changes) > 5 else "")
        raise ProjectError(
            f"{root} has uncommitted changes ({shown}); commit or stash them, then run `mlops upgrade` again"
        )


def _vendored_wheel(root: Path) -> Path:
    wheels = sorted((root / VENDOR).glob("mlops_template-*.whl"))
    if not wheels:
        raise ProjectError(
            f"{root / VENDOR} holds no mlops-template wheel, so the template the project was made from is unknown; "
            "restore vendor/ from the project's history (git checkout -- vendor)"
        )
    _template_files(wheels[-1])
    return wheels[-1]


def _template_files(wheel: Path) -> list[str]:
    """The template's files inside `wheel`; refused when it is not an mlops-template wheel."""
    try:
        with zipfile.ZipFile(wheel) as archive:
            names = [n for n in archive.namelist() if n.startswith(_TEMPLATE) and not n.endswith("/")]
    except (OSError, zipfile.BadZipFile) as exc:
        raise ProjectError(f"{wheel} cannot be read as a wheel ({exc}); pass an mlops-template wheel") from exc
    if f"{_TEMPLATE}copier.yml" not in names:
        raise ProjectError(f"{wheel} is not an mlops-template wheel (it holds no project template)")
    return names


def _extract(wheel: Path, folder: Path) -> Path:
    with zipfile.ZipFile(wheel) as archive:
        for name in _template_files(wheel):
            target = folder / name.removeprefix(_TEMPLATE)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(archive.read(name))
    return folder


def _template_repository(old: Path, new: Path, folder: Path) -> Path:
    """A repository with the old template tagged `_OLD` and the new one tagged `_NEW` on top."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(old, folder, ignore=ignore)
    vcs.init_commit(folder, "the project's template", identity=_IDENTITY, tag=_OLD)
    for child in folder.iterdir():
        if child.name != ".git":
            shutil.rmtree(child) if child.is_dir() else child.unlink()
    shutil.copytree(new, folder, ignore=ignore, dirs_exist_ok=True)
    vcs.commit_all(folder, "the new template", identity=_IDENTITY, tag=_NEW)
    return folder


def _merge(clone: Path, repository: Path, new_version: str) -> None:
    """Copier's update of the clone from the old tag to the new: conflicts inline, nothing asked."""
    from copier import Worker
    from copier.errors import CopierError

    data = {**version_answers(new_version)}
    try:
        with Worker(
            src_path=str(repository),
            dst_path=clone,
            vcs_ref=_NEW,
            data=data,
            defaults=True,
            overwrite=True,
            conflict="inline",
            quiet=True,
            unsafe=False,
        ) as worker:
            worker.run_update()
    except CopierError as exc:
        raise ProjectError(f"merging the new template failed ({exc})") from exc


def _changes(clone: Path) -> tuple[list[str], list[str]]:
    """The files the merge changed or added in the clone, and those it removed (the answers file aside)."""
    changed, removed = [], []
    for code, path in vcs.status(clone):
        if path == ANSWERS_FILE or path.endswith("/"):
            continue
        (removed if "D" in code else changed).append(path)
    return sorted(changed), sorted(removed)


def _refuse_overwrites(root: Path, changed: list[str]) -> None:
    """An untracked file of the team's where the merge would write one of the template's is refused, not lost."""
    untracked = {path for code, path in vcs.status(root) if code == "??"}
    clashes = [p for p in changed if p in untracked or any(p.startswith(u) for u in untracked if u.endswith("/"))]
    if clashes:
        raise ProjectError(
            f"the new template adds {', '.join(clashes)}, which the project holds untracked; "
            "move or commit them, then run `mlops upgrade` again"
        )


def _has_markers(path: Path) -> bool:
    try:
        return any(line.startswith(_CONFLICT) for line in path.read_text(encoding="utf-8").splitlines())
    except (OSError, UnicodeDecodeError):
        return False
