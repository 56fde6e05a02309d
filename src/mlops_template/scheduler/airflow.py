"""Write the project's Airflow DAG from `mlops.toml`: one task per pipeline step, chained in pipeline order.

The cluster DAG (`dags/<project>.py`) runs each step as its own Kubernetes pod
from the project's image; the local variant (`dags/<project>_local.py`) runs
each step as a subprocess of the project's own interpreter. Either way every
task of one DAG run joins the same pipeline run, keyed by Airflow's `run_id`.

The file imports only Airflow and its providers, never this library, so it
loads in an Airflow that has no `mlops` installed. The same inputs give the
same bytes. A hash of the body on line 3 tells a file `mlops dag` wrote from
one edited by hand, which is kept unless `force` is given.
"""

from __future__ import annotations

import difflib
import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path

from mlops_template.config.load import Config, Environment
from mlops_template.config.resources import check_image, split_tag
from mlops_template.errors import ConfigError, VcsError, choices
from mlops_template.pipeline.loader import check_step_tables
from mlops_template.scheduler.render import (
    HASH_PREFIX,
    TAG_MACRO,
    body_digest,
    render_cluster,
    render_local,
)
from mlops_template.vcs import head_commit

logger = logging.getLogger(__name__)

DAGS_FOLDER = "dags"


@dataclass(frozen=True)
class DagFile:
    """What `mlops dag` wrote (or would write) and what it noticed on the way."""

    path: Path
    text: str
    written: bool
    warnings: list[str] = field(default_factory=list)


class HandEditedError(ConfigError):
    """The DAG file was edited since `mlops dag` wrote it; regenerating would lose the edit."""


def write_dag(
    config: Config,
    steps: list[str],
    *,
    environment: str | None = None,
    image: str | None = None,
    output: Path | None = None,
    local: bool = False,
    force: bool = False,
    python: str | None = None,
) -> DagFile:
    """Check everything, then write the DAG file (atomically); nothing is written when a check fails."""
    check_step_tables(config, steps)
    warnings: list[str] = []
    if local:
        env = config.environment(environment)
        text = render_local(config, steps, env, python=python or sys.executable)
    else:
        env = _cluster_environment(config, environment)
        default, images = _images(config, steps, image, warnings)
        text = render_cluster(config, steps, env, default, images)
    for warning in warnings:
        logger.warning("%s", warning)
    path = (output or config.root / DAGS_FOLDER / f"{config.name}{'_local' if local else ''}.py").resolve()
    if path.exists():
        current = path.read_text(encoding="utf-8")
        if current == text:
            return DagFile(path, text, written=False, warnings=warnings)
        if not force and not is_generated(current):
            raise HandEditedError(
                f"{path} was edited by hand ({_differences(current, text)}); keep your edit in mlops.toml "
                "and run mlops dag again, or overwrite it with --force"
            )
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
    return DagFile(path, text, written=True, warnings=warnings)


def is_generated(text: str) -> bool:
    """Whether `text` is a DAG file exactly as `mlops dag` wrote it (its body matches its hash line)."""
    lines = text.splitlines(keepends=True)
    for i, line in enumerate(lines[:5]):
        if line.startswith(HASH_PREFIX):
            body = "".join(lines[:i] + lines[i + 1 :])
            return line[len(HASH_PREFIX) :].strip() == body_digest(body)
    return False


def _differences(current: str, text: str) -> str:
    """The lines of the file that differ from what `mlops dag` writes now, briefly."""
    diff = difflib.SequenceMatcher(a=current.splitlines(), b=text.splitlines(), autojunk=False)
    spans = []
    for op, a0, a1, _b0, _b1 in diff.get_opcodes():
        if op == "equal":
            continue
        if a1 > a0:
            spans.append(f"line {a0 + 1}" if a1 - a0 == 1 else f"lines {a0 + 1}-{a1}")
        else:
            spans.append(f"lines missing after line {a0}")
    shown = ", ".join(spans[:5]) + (f" and {len(spans) - 5} more" if len(spans) > 5 else "")
    return f"{shown} differ from what mlops dag writes"


def _cluster_environment(config: Config, name: str | None) -> Environment:
    name = name or config.dag.environment or ("dev" if "dev" in config.environments else None)
    if name is None:
        raise ConfigError(
            f"{config.path}: which environment do the pods run against? Set [dag] environment or pass --environment"
        )
    env = config.environments.get(name)
    if env is None:
        raise ConfigError(f"{config.path}: unknown environment '{name}'; {choices(config.environments, name)}")
    if not env.is_remote_storage or env.tracking_uri.startswith(("sqlite:", "file:")) or "://" not in env.tracking_uri:
        raise ConfigError(
            f"environment '{name}' keeps its data or runs in local files, which are gone when a pod ends; "
            "choose one with S3 storage and a tracking server (--environment dev), or use mlops dag --local"
        )
    return env


def _images(
    config: Config, steps: list[str], image: str | None, warnings: list[str]
) -> tuple[str | None, dict[str, str]]:
    """The DAG's image (`--image`, else `[dag] repository` with the Variable's tag) and each step's image."""
    own = {step: config.step(step).resources.image for step in steps}
    if image is not None:
        default: str | None = check_image(image, "--image")
    elif config.dag.repository is not None:
        default = f"{config.dag.repository}:{TAG_MACRO}"
    elif all(own.values()):
        default = None
    else:
        raise ConfigError(
            f'{config.path}: [dag] repository is not set; add repository = "<registry>/{config.name}" '
            "(where CI pushes the image) or pass --image REPOSITORY:TAG"
        )
    refs = [("--image", image)] + [(f"[steps.{s}.resources] image", ref) for s, ref in own.items()]
    for where, ref in refs:
        if ref is None:
            continue
        repository, tag = split_tag(ref.partition("@")[0])
        if tag == "latest":
            warnings.append(
                f"{where} {ref} runs whatever was pushed last; use the commit tag scripts/build_image.sh pushes "
                f"({repository}:{_commit(config.root)})"
            )
    return default, {step: own[step] or default for step in steps}


def _commit(root: Path) -> str:
    try:
        return head_commit(root)
    except VcsError:
        return "<commit sha>"
