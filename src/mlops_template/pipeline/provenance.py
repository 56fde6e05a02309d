"""What a run needs, besides its data, to be reproduced: the code, the installed packages, Python, the platform.

Captured once per process and recorded on the pipeline run it creates and on
every step run it starts (steps may run in different processes or pods):

- tags `mlops.git_commit` / `mlops.git_dirty` (as before), `mlops.packages`
  (a short hash of every installed distribution and version), `mlops.python`,
  `mlops.platform`, `mlops.git_diff` (the bytes of the recorded diff) and
  `mlops.git_diff_sha256` (its hash, checked before `mlops reproduce` applies it);
- the artifact `mlops/environment.json`: the packages, Python, platform, and
  the files that were untracked or withheld;
- when the work tree is dirty, the artifact `mlops/code.diff`: the diff of
  tracked files against the commit (binary-safe, what `git apply` takes).
  Only what git tracks is recorded: untracked files are listed by name only.
  Files that look like secrets (`.env*`, `*.pem`, `*.key`, `id_rsa`,
  `.netrc`, `*credentials*`, …) are never included (a warning names them); a
  diff in which a secret appears (a private key block, an AWS access key id,
  the value of a secret variable) or over 1 MB is not stored at all (a
  warning says which, never the secret).

Packages come from `importlib.metadata`'s distribution folders, named
`<name>-<version>.dist-info` by the wheel standard, so no metadata file is
parsed and no pip process started: the whole capture takes milliseconds.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import logging
import platform
import posixpath
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlops_template import vcs
from mlops_template.errors import RunError, VcsError
from mlops_template.tracking.tags import (
    TAG_GIT_COMMIT,
    TAG_GIT_DIFF,
    TAG_GIT_DIFF_SHA256,
    TAG_GIT_DIRTY,
    TAG_PACKAGES,
    TAG_PLATFORM,
    TAG_PYTHON,
)

if TYPE_CHECKING:
    from mlflow import MlflowClient

logger = logging.getLogger(__name__)

ENVIRONMENT_ARTIFACT = "mlops/environment.json"
DIFF_ARTIFACT = "mlops/code.diff"
MAX_DIFF_BYTES = 1_000_000
SECRET_PATTERNS = (
    ".env", ".env.*", "*.env", "*.pem", "*.key", "*.p12", "*.pfx", "*.jks", "*.keystore", "*credentials*",
    "id_rsa", "id_dsa", "id_ecdsa", "id_ed25519", ".netrc", "_netrc", ".pgpass", ".git-credentials",
)  # fmt: skip
TEMPLATES = (".example", ".sample", ".template", ".dist")  # `.env.example`: the names of the settings, no values
# What a secret looks like inside a diff, by what it is (never shown).
SECRET_CONTENT = (
    ("a private key", rb"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----"),
    ("an AWS access key id", rb"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"),
)
NOT_RECORDED = "not recorded"


class CodeVersion(vcs.GitState):
    """The commit a run's code came from and whether its work tree differed, as the run's tags record them."""

    @property
    def tags(self) -> dict[str, str]:
        return {
            TAG_GIT_COMMIT: self.commit,
            TAG_GIT_DIRTY: "unknown" if self.dirty is None else str(self.dirty).lower(),
        }


@dataclass(frozen=True)
class Provenance:
    """The code and environment one process runs steps with."""

    git: CodeVersion
    packages: dict[str, str]
    python: str
    platform: str
    diff: bytes | None = None  # uncommitted changes of tracked files; None when clean or not recorded
    untracked: list[str] = field(default_factory=list)
    withheld: list[str] = field(default_factory=list)  # secret-looking files left out of the diff
    diff_problem: str | None = None  # why a dirty tree's diff was not recorded

    @property
    def packages_hash(self) -> str:
        return packages_hash(self.packages)

    @property
    def tags(self) -> dict[str, str]:
        if self.diff is not None:
            diff = str(len(self.diff))
        else:
            diff = NOT_RECORDED if self.git.dirty else "none"
        tags = {
            **self.git.tags,
            TAG_PACKAGES: self.packages_hash,
            TAG_PYTHON: self.python,
            TAG_PLATFORM: self.platform,
            TAG_GIT_DIFF: diff,
        }
        if self.diff:
            tags[TAG_GIT_DIFF_SHA256] = hashlib.sha256(self.diff).hexdigest()
        return tags

    def to_json(self) -> dict[str, Any]:
        return {
            "git": {
                "commit": self.git.commit,
                "dirty": self.git.dirty,
                "diff_bytes": None if self.diff is None else len(self.diff),
                "untracked": self.untracked,
                "withheld": self.withheld,
                "diff_problem": self.diff_problem,
            },
            "python": self.python,
            "platform": self.platform,
            "packages": self.packages,
        }

    def record(self, client: MlflowClient, run_id: str) -> None:
        """Log the artifacts on `run_id` (its tags are set when the run is created).

        Where no temporary folder can be written (a read-only pod), the run goes
        on without them and a warning says so; a failing store still raises.
        """
        try:
            self._log(client, run_id)
        except OSError as exc:
            logger.warning(
                "run %s: packages and code diff not recorded (%s: %s); make the temp folder writable (TMPDIR)",
                run_id,
                type(exc).__name__,
                exc,
            )

    def _log(self, client: MlflowClient, run_id: str) -> None:
        import tempfile

        with tempfile.TemporaryDirectory(prefix="mlops-provenance-") as tmp:
            folder = Path(tmp)
            (folder / posixpath.basename(ENVIRONMENT_ARTIFACT)).write_text(
                json.dumps(self.to_json(), indent=1, sort_keys=True), encoding="utf-8"
            )
            if self.diff:  # its bytes as they are: a diff may hold any encoding
                (folder / posixpath.basename(DIFF_ARTIFACT)).write_bytes(self.diff)
            client.log_artifacts(run_id, tmp, posixpath.dirname(ENVIRONMENT_ARTIFACT))


def capture(root: Path) -> Provenance:
    """The code checked out in `root` (and its uncommitted diff) and this interpreter's packages and platform."""
    git = git_state(root)
    diff, untracked, withheld, problem = None, [], [], None
    if git.dirty:
        diff, untracked, withheld, problem = _uncommitted(root)
    return Provenance(
        git=git,
        packages=installed_packages(),
        python=f"{platform.python_implementation()} {platform.python_version()}",
        platform=f"{sys.platform}-{platform.machine()}",
        diff=diff,
        untracked=untracked,
        withheld=withheld,
        diff_problem=problem,
    )


def installed_packages() -> dict[str, str]:
    """Every distribution this interpreter can import, normalised name → version."""
    import importlib.metadata

    found: dict[str, str] = {}
    for dist in importlib.metadata.distributions():
        folder = getattr(dist, "_path", None)
        stem = folder.name if isinstance(folder, Path) else ""
        name, version = _from_folder(stem)
        if not name:  # an egg-info or other folder that does not carry the version: read its metadata
            name, version = dist.metadata["Name"] or "", dist.version or ""
        if name:
            found.setdefault(_normalise(name), version)
    return dict(sorted(found.items()))


def packages_hash(packages: dict[str, str]) -> str:
    text = "\n".join(f"{name}=={version}" for name, version in sorted(packages.items()))
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def _from_folder(stem: str) -> tuple[str, str]:
    if not stem.endswith(".dist-info"):
        return "", ""
    name, _, version = stem.removesuffix(".dist-info").partition("-")
    return (name, version) if version else ("", "")


def _normalise(name: str) -> str:
    import re

    return re.sub(r"[-_.]+", "-", name).lower()


def is_secret(path: str) -> bool:
    """Whether a file's name looks like it holds credentials; such files never leave the machine in a diff."""
    name = posixpath.basename(path)
    return not name.endswith(TEMPLATES) and any(fnmatch.fnmatch(name, pattern) for pattern in SECRET_PATTERNS)


def _uncommitted(root: Path) -> tuple[bytes | None, list[str], list[str], str | None]:
    """The diff of tracked files against HEAD (secret-looking ones left out), untracked names, withheld names."""
    try:
        changes = vcs.status(root)
    except VcsError:
        return None, [], [], "git status failed"
    tracked = [path for code, path in changes if code != "??"]
    untracked = [path for code, path in changes if code == "??"]
    withheld = sorted(p for p in {*tracked, *untracked} if is_secret(p))
    if withheld:
        logger.warning(
            "files that look like secrets are not recorded with this run's code: %s; "
            "the run cannot be reproduced with their changes",
            ", ".join(withheld),
        )
    included = sorted({p for p in tracked if not is_secret(p)})
    untracked = sorted(p for p in untracked if not is_secret(p))
    if not included:
        return b"", untracked, withheld, None
    try:
        diff = vcs.diff(root, included)
    except VcsError:
        return None, untracked, withheld, "git diff failed"
    if len(diff) > MAX_DIFF_BYTES:
        problem = f"the diff is {len(diff):,} bytes, over the {MAX_DIFF_BYTES:,} byte cap"
        logger.warning("this run's uncommitted changes are not recorded: %s; commit them to record the code", problem)
        return None, untracked, withheld, problem
    secret = secret_in(diff)
    if secret:
        problem = f"the diff holds {secret}"
        logger.warning(
            "this run's uncommitted changes are not recorded: %s; take it out of the tracked files (the run "
            "cannot be reproduced until they are committed without it)",
            problem,
        )
        return None, untracked, withheld, problem
    return diff, untracked, withheld, None


def secret_in(diff: bytes) -> str | None:
    """What kind of secret `diff` holds (a private key, an AWS key id, a secret variable's value), or None."""
    import re

    from mlops_template.redact import secret_values

    for what, pattern in SECRET_CONTENT:
        if re.search(pattern, diff):
            return what
    if any(value.encode() in diff for value in secret_values()):
        return "the value of a secret environment variable"
    return None


def check_diff(run_id: str, diff: bytes, expected: str | None) -> None:
    """The recorded diff is applied (and its code run) only if its bytes are those hashed when the run was made."""
    if not diff:
        return
    actual = hashlib.sha256(diff).hexdigest()
    if actual != expected:
        found = f"{actual[:12]} != {expected[:12]}" if expected else f"no {TAG_GIT_DIFF_SHA256} was recorded"
        raise RunError(
            f"run {run_id}: its recorded diff ({DIFF_ARTIFACT}) does not match the sha256 taken when the run was made "
            f"({found}), so it is not applied; restore the artifact, or reproduce a run made from committed code"
        )


def git_state(root: Path) -> CodeVersion:
    """The commit checked out in `root` and whether the work tree differs from it.

    Where git is missing or `root` has no commit, the run is still tagged
    (commit `none`, dirty `unknown`) and a warning says how to get the code
    version recorded: a run whose code cannot be found again is hard to trust.
    """
    try:
        commit = vcs.head_commit(root)
    except VcsError as exc:
        return _without_repository(root, exc)
    try:
        dirty: bool | None = bool(vcs.status(root))
    except VcsError as exc:
        dirty = None
        logger.warning(
            "cannot tell whether this run's code differs from commit %s (%s=unknown): %s: %s",
            commit[:12],
            TAG_GIT_DIRTY,
            root,
            exc.reason.removeprefix("fatal: ") or "git status failed",
        )
    return CodeVersion(commit=commit, dirty=dirty)


def _without_repository(root: Path, exc: VcsError) -> CodeVersion:
    """The commit an image names (see :func:`vcs.image_commit`); otherwise `none`, with a warning saying how to fix it."""
    try:
        built = vcs.image_commit()
    except VcsError as bad:
        logger.warning(
            "code version not recorded for this run (%s=none): %s; "
            "give the full 40-character SHA the image was built from (scripts/build_image.sh tags it so)",
            TAG_GIT_COMMIT,
            bad.reason,
        )
        return CodeVersion(commit="none", dirty=None)
    if built is not None:
        return CodeVersion(commit=built.commit, dirty=built.dirty)
    logger.warning(
        "code version not recorded for this run (%s=none): %s: %s; %s",
        TAG_GIT_COMMIT,
        root,
        exc.reason.removeprefix("fatal: ") or "the repository has no commit yet",
        _git_fix(root, exc),
    )
    return CodeVersion(commit="none", dirty=None)


def _git_fix(root: Path, exc: VcsError) -> str:
    if exc.missing:
        return f"install git, or in an image set {vcs.IMAGE_COMMIT} to the commit it was built from"
    if "dubious ownership" in exc.reason:
        return f"trust the folder: git config --global --add safe.directory {root}"
    return "commit the code there: git init && git add -A && git commit -m start"
