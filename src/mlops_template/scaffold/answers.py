"""What made a project: copier's answers file, recording the template's version and digest, never a machine path.

`mlops upgrade` reads it to know which template the project came from; the
vendored wheel holds that template's files, and `template_digest` says whether
another template differs from it at all.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from mlops_template.scaffold.wheel import source_files

ANSWERS_FILE = ".copier-answers.yml"
_HEADER = "# Answers given to the mlops-template questions; `mlops upgrade` reads them. Do not edit by hand.\n"
_COPIER_KEYS = ("_src_path", "_commit")  # where copier found the template: a path on one machine, or a temp repo


def template_digest(folder: Path) -> str:
    """sha256 over every template file's relative path and bytes, in path order."""
    hasher = hashlib.sha256()
    for path in source_files(folder):
        relative = path.relative_to(folder).as_posix().encode()
        data = path.read_bytes()
        hasher.update(len(relative).to_bytes(8, "big") + relative + len(data).to_bytes(8, "big") + data)
    return hasher.hexdigest()


def read_answers(root: Path) -> dict[str, Any]:
    """The project's recorded answers; empty when it has no answers file."""
    import yaml

    path = root / ANSWERS_FILE
    if not path.is_file():
        return {}
    found = yaml.safe_load(path.read_text(encoding="utf-8"))
    return found if isinstance(found, dict) else {}


def write_answers(root: Path, answers: dict[str, Any], *, digest: str, source: tuple[str, str] | None = None) -> None:
    """Record `answers` with the template's digest, dropping where copier found the template.

    `source` (a repository and a tag) names it for copier instead: only in the
    temporary clone `mlops upgrade` merges in.
    """
    import yaml

    kept = {k: v for k, v in answers.items() if k not in _COPIER_KEYS}
    kept["template_digest"] = digest
    if source is not None:
        kept["_src_path"], kept["_commit"] = source
    body = yaml.safe_dump(dict(sorted(kept.items())), sort_keys=False, allow_unicode=True)
    (root / ANSWERS_FILE).write_text(_HEADER + body, encoding="utf-8")
