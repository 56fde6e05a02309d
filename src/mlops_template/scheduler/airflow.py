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
import hashlib
import json
import logging
import re
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlops_template.config.dag import DagSettings
from mlops_template.config.load import Config, Environment
from mlops_template.config.resources import Resources, check_image, split_tag
from mlops_template.errors import ConfigError, choices
from mlops_template.pipeline.loader import check_step_tables
from mlops_template.tracking.connect import IMAGE_COMMIT

logger = logging.getLogger(__name__)

DAGS_FOLDER = "dags"
HASH_PREFIX = "# mlops-dag-sha256: "
LINE_LENGTH = 88  # fits ruff's and black's default, so it also fits any longer project setting


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
            return line[len(HASH_PREFIX) :].strip() == _digest(body)
    return False


def _digest(body: str) -> str:
    return hashlib.sha256(body.encode("utf-8")).hexdigest()[:32]


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
        default = f"{config.dag.repository}:{{{{ var.value.get('{tag_variable(config)}') }}}}"
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
    import subprocess

    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10)
    except OSError:
        return "<commit sha>"
    return out.stdout.strip() if out.returncode == 0 and out.stdout.strip() else "<commit sha>"


def tag_variable(config: Config) -> str:
    """The Airflow Variable CI sets to the commit SHA of the image it pushed."""
    return f"{config.name}_image_tag"


# ---------------------------------------------------------------------------------------------------------------
# Rendering: Python source laid out as ruff format lays it out, so the file passes `ruff format --check`.


class _Code:
    """A Python expression that is written as is."""

    def __init__(self, text: str) -> None:
        self.text = text


class _Call:
    def __init__(self, function: str, /, **kwargs: Any) -> None:
        self.name, self.kwargs = function, kwargs


def _inline(value: Any) -> str:
    if isinstance(value, _Code):
        return value.text
    if isinstance(value, _Call):
        return f"{value.name}({', '.join(f'{k}={_inline(v)}' for k, v in value.kwargs.items())})"
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, bool | int) or value is None:
        return repr(value)
    if isinstance(value, list | tuple):
        return f"[{', '.join(_inline(v) for v in value)}]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(k)}: {_inline(v)}" for k, v in value.items()) + "}"
    raise TypeError(type(value))


def _expr(value: Any, indent: int, prefix: str = "", suffix: str = "") -> list[str]:
    """`prefix + value + suffix` at `indent`, on one line if it fits, else split with a trailing comma per item."""
    pad = " " * indent
    line = f"{pad}{prefix}{_inline(value)}{suffix}"
    if len(line) <= LINE_LENGTH or not isinstance(value, _Call | list | tuple | dict) or not _items(value):
        return [line]
    inner = indent + 4
    if isinstance(value, _Call):
        opening, closing = f"{value.name}(", ")"
        body = [ln for k, v in value.kwargs.items() for ln in _expr(v, inner, f"{k}=", ",")]
    elif isinstance(value, dict):
        opening, closing = "{", "}"
        body = [ln for k, v in value.items() for ln in _expr(v, inner, f"{json.dumps(k)}: ", ",")]
    else:
        opening, closing = "[", "]"
        body = [ln for v in value for ln in _expr(v, inner, "", ",")]
    return [f"{pad}{prefix}{opening}", *body, f"{pad}{closing}{suffix}"]


def _items(value: Any) -> bool:
    return bool(value.kwargs if isinstance(value, _Call) else value)


def _header(lines: list[str], body: list[str]) -> str:
    """The comment lines, the hash line, then the body; the hash covers everything but its own line."""
    text_body = "\n".join(body) + "\n"
    head = "\n".join(lines) + "\n"
    return head + HASH_PREFIX + _digest(head + text_body) + "\n" + text_body


def _dag_call(config: Config, settings: DagSettings, description: str, *, local: bool = False) -> _Call:
    default_args: dict[str, Any] = {
        "retries": settings.retries,
        "retry_delay": _Code(f"timedelta(seconds={settings.retry_delay})"),
    }
    if settings.execution_timeout is not None:
        default_args["execution_timeout"] = _Code(f"timedelta(seconds={settings.execution_timeout})")
    kwargs: dict[str, Any] = {"dag_id": f"{config.name}_local" if local else config.name, "description": description}
    kwargs["schedule"] = settings.schedule
    if settings.start_date is not None:
        y, m, d = (int(p) for p in settings.start_date.split("-"))
        kwargs["start_date"] = _Code(f"datetime({y}, {m}, {d}, tzinfo=UTC)")
    kwargs["catchup"] = False
    kwargs["default_args"] = default_args
    kwargs["tags"] = list(dict.fromkeys(["mlops", *settings.tags, config.name]))
    return _Call("DAG", **kwargs)


def _datetime_import(settings: DagSettings) -> str:
    names = ["UTC", "datetime", "timedelta"] if settings.start_date else ["timedelta"]
    return f"from datetime import {', '.join(names)}"


def _chain(steps: list[str]) -> str:
    return "    " + " >> ".join(_var(s) for s in steps)


def _var(step: str) -> str:
    name = re.sub(r"\W", "_", step)
    return name if name.isidentifier() and not name[0].isdigit() else f"step_{name}"


def _plan_arguments(steps: list[str], env: Environment) -> list[str]:
    # --supersede: Airflow starts a task's next try only once the last one is over, so a step
    # attempt still RUNNING under this pipeline run was killed without cleanup and is marked FAILED.
    return ["--environment", env.name, "--pipeline-run", "{{ run_id }}", "--plan", ",".join(steps), "--supersede"]


def render_cluster(
    config: Config, steps: list[str], env: Environment, default: str | None, images: dict[str, str]
) -> str:
    """The cluster DAG: one KubernetesPodOperator per step, in pipeline order."""
    settings = config.dag
    comments = [
        f"# Airflow DAG for {config.name}: one Kubernetes pod per pipeline step, in pipeline order.",
        "# Written by `mlops dag` from mlops.toml: change mlops.toml and run `mlops dag` again rather than",
        "# editing this file (an edited file is kept unless `mlops dag --force`).",
    ]
    body = [
        "from __future__ import annotations",
        "",
        _datetime_import(settings),
        "",
        "from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator",
        "from airflow.sdk import DAG",
        "from kubernetes.client import models as k8s",
        "",
    ]
    if default is not None and "{{" in default:
        body += [
            f"# The image's tag is the Airflow Variable {tag_variable(config)}: CI sets it to the full commit SHA",
            "# of the image it built and pushed (scripts/build_image.sh --push), so this file never goes stale.",
        ]
    if default is not None:
        body.append(f"IMAGE = {json.dumps(default)}")
    body += [
        "# Every pod of one DAG run joins one MLflow pipeline run, keyed by the DAG run's id.",
        *_expr(_plan_arguments(steps, env), 0, "ARGUMENTS = "),
        "",
        *_expr(
            _dag_call(config, settings, f"{config.name} pipeline: one Kubernetes pod per step"), 0, "with ", " as dag:"
        ),
    ]
    for step in steps:
        resources = config.step(step).resources
        kwargs: dict[str, Any] = {
            "task_id": step,
            "name": _pod_name(config.name, step),
            "namespace": settings.namespace,
            "image": _Code("IMAGE") if images[step] == default else images[step],
            "arguments": _Code(f'["run", "--step", {json.dumps(step)}, *ARGUMENTS]'),
        }
        commit = _image_commit(images[step])
        if commit is not None:  # the image has no .git: this is how its runs record their code
            kwargs["env_vars"] = {IMAGE_COMMIT: commit}
        if settings.service_account:
            kwargs["service_account_name"] = settings.service_account
        if settings.secrets:
            kwargs["env_from"] = [
                _Call("k8s.V1EnvFromSource", secret_ref=_Call("k8s.V1SecretEnvSource", name=name))
                for name in settings.secrets
            ]
        requirements = _requirements(resources)
        if requirements is not None:
            kwargs["container_resources"] = requirements
        if resources.node_selector:
            kwargs["node_selector"] = dict(resources.node_selector)
        if resources.tolerations:
            kwargs["tolerations"] = [
                _Call("k8s.V1Toleration", **{k: v for k, v in vars(t).items() if v is not None})
                for t in resources.tolerations
            ]
        kwargs["labels"] = {"app.kubernetes.io/part-of": config.name, "mlops/step": step}
        kwargs["get_logs"] = True
        kwargs["on_finish_action"] = "delete_pod"
        body += _expr(_Call("KubernetesPodOperator", **kwargs), 4, f"{_var(step)} = ")
    body.append(_chain(steps))
    return _header(comments, body)


def _image_commit(image: str | None) -> str | None:
    """The commit an image was built from, when its tag names it: a SHA tag, or the Variable CI sets to one."""
    if image is None:
        return None
    _, tag = split_tag(image.partition("@")[0])
    if tag is not None and (tag.startswith("{{") or re.fullmatch(r"[0-9a-f]{40}(-dirty)?", tag)):
        return tag
    return None


def _requirements(resources: Resources) -> _Call | None:
    requests, limits = resources.requests(), resources.limits()
    if not requests and not limits:
        return None
    kwargs: dict[str, Any] = {}
    if requests:
        kwargs["requests"] = requests
    if limits:
        kwargs["limits"] = limits
    return _Call("k8s.V1ResourceRequirements", **kwargs)


def _pod_name(project: str, step: str) -> str:
    return re.sub(r"[^a-z0-9-]+", "-", f"{project}-{step}".lower()).strip("-")[:63]


def render_local(config: Config, steps: list[str], env: Environment, *, python: str) -> str:
    """The local variant: one BashOperator per step, `mlops run --step S` in the project's interpreter."""
    settings = config.dag
    comments = [
        f"# Airflow DAG for {config.name} on this machine: each step runs `mlops run --step <step>` in the",
        "# project's own interpreter, so an Airflow in a virtual environment of its own needs no mlops.",
        "# Written by `mlops dag --local` from mlops.toml: run it again rather than editing this file.",
    ]
    root = str(config.root)
    body = [
        "from __future__ import annotations",
        "",
        _datetime_import(settings),
        "",
        "from airflow.providers.standard.operators.bash import BashOperator",
        "from airflow.sdk import DAG",
        "",
        f"PROJECT = {json.dumps(root)}",
        f"PYTHON = {json.dumps(python)}",
        "# Every task of one DAG run joins one MLflow pipeline run, keyed by the DAG run's id.",
        *_expr([_shell_word(w) for w in _plan_arguments(steps, env)], 0, "ARGUMENTS = "),
        "",
        "",
        "def command(step: str) -> str:",
        '    """The shell command of one step: `mlops run` in the interpreter of the project."""',
        '    mlops = [PYTHON, "-m", "mlops_template", "run", "--project", PROJECT]',
        '    return " ".join(["exec", *mlops, "--step", step, *ARGUMENTS])',
        "",
        "",
        *_expr(
            _dag_call(config, settings, f"{config.name} pipeline: each step in the project's interpreter", local=True),
            0,
            "with ",
            " as dag:",
        ),
    ]
    for step in steps:
        command = _Code(f"command({json.dumps(_shell_word(step))})")
        call = _Call("BashOperator", task_id=step, bash_command=command, cwd=_Code("PROJECT"))
        body += _expr(call, 4, f"{_var(step)} = ")
    body.append(_chain(steps))
    if any(c in root + python for c in " '\"$`\\"):
        raise ConfigError(
            f"the project folder or interpreter path has characters a shell command cannot carry safely ({root!r}, "
            f"{python!r}); move the project to a plain path"
        )
    return _header(comments, body)


def _shell_word(word: str) -> str:
    """A word as bash reads it; `{{ run_id }}` is quoted as a whole, for Airflow renders it first."""
    return "'{{ run_id }}'" if word == "{{ run_id }}" else shlex.quote(word)
