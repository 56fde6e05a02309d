"""The text of a DAG file, as Python source laid out the way ruff format lays it out (it passes `--check`).

The cluster variant runs each step as a Kubernetes pod, the local one as a
subprocess of the project's interpreter. Either imports only Airflow and its
providers, and the same inputs give the same bytes. The hash line after the
opening comments covers the rest of the file, which tells a file written here
from one edited by hand.
"""

from __future__ import annotations

import hashlib
import json
import re
import shlex
from typing import Any

from mlops_template import vcs
from mlops_template.config.dag import DagSettings
from mlops_template.config.load import Config, Environment
from mlops_template.config.resources import Resources, split_tag
from mlops_template.errors import ConfigError
from mlops_template.vcs import IMAGE_COMMIT

HASH_PREFIX = "# mlops-dag-sha256: "
LINE_LENGTH = 88  # fits ruff's and black's default, so it also fits any longer project setting


def tag_variable(config: Config) -> str:
    """The Airflow Variable CI sets to the commit SHA of the image it pushed."""
    return f"{config.name}_image_tag"


# What a pod's image tag is when it comes from that Variable: a macro of the DAG that fails the task,
# before any pod, while the Variable is unset (Airflow's own `var.value.get` would give "NOTSET").
TAG_MACRO = "{{ image_tag() }}"
# The uid the image's user has (Dockerfile: ARG UID), named by every pod's security context.
POD_UID = 10001


def body_digest(body: str) -> str:
    """The hash on a DAG file's hash line: of everything but that line."""
    return hashlib.sha256(body.encode("utf-8")).hexdigest()[:32]


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
    return head + HASH_PREFIX + body_digest(head + text_body) + "\n" + text_body


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
    ]
    macros = any(TAG_MACRO in (image or "") for image in [default, *images.values()])
    body += [
        "from airflow.sdk import DAG, Variable" if macros else "from airflow.sdk import DAG",
        "from kubernetes.client import models as k8s",
        "",
    ]
    if macros:
        body += _image_tag_function(config)
    if default is not None:
        body.append(f"IMAGE = {json.dumps(default)}")
    dag = _dag_call(config, settings, f"{config.name} pipeline: one Kubernetes pod per step")
    if macros:
        dag.kwargs["user_defined_macros"] = {"image_tag": _Code("image_tag")}
    body += [
        "# Every pod of one DAG run joins one MLflow pipeline run, keyed by the DAG run's id.",
        *_expr(_plan_arguments(steps, env), 0, "ARGUMENTS = "),
        *_restricted_pods(),
        "",
        *_expr(dag, 0, "with ", " as dag:"),
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
        kwargs["security_context"] = _Code("POD_SECURITY")
        kwargs["container_security_context"] = _Code("CONTAINER_SECURITY")
        kwargs["volumes"] = _Code("[TMP_VOLUME]")
        kwargs["volume_mounts"] = _Code("[TMP_MOUNT]")
        kwargs["labels"] = {"app.kubernetes.io/part-of": config.name, "mlops/step": step}
        kwargs["get_logs"] = True
        kwargs["on_finish_action"] = "delete_pod"
        body += _expr(_Call("KubernetesPodOperator", **kwargs), 4, f"{_var(step)} = ")
    body.append(_chain(steps))
    return _header(comments, body)


def _image_tag_function(config: Config) -> list[str]:
    """The DAG's `image_tag` macro: the Variable CI sets, or the task fails naming it (no pod asks for NOTSET)."""
    variable = tag_variable(config)
    message = [
        f"Airflow Variable {variable} is not set, so the pods have no image tag; ",
        "push an image from CI (it sets the Variable) or run: ",
        f"airflow variables set {variable} <commit SHA>",
    ]
    return [
        f"# The image's tag is the Airflow Variable {variable}: CI sets it to the full commit SHA",
        "# of the image it built and pushed (scripts/build_image.sh --push), so this file never goes stale.",
        "",
        "",
        "def image_tag() -> str:",
        f'    """The Variable {variable}; unset, the task fails here, before its pod is made."""',
        f"    tag = Variable.get({json.dumps(variable)}, default=None)",
        "    if not tag:",
        "        raise RuntimeError(",
        *(f"            {json.dumps(part)}" for part in message),
        "        )",
        "    return tag",
        "",
        "",
    ]


def _restricted_pods() -> list[str]:
    """Module constants every pod takes: the restricted Pod Security Standard, and a writable /tmp on a read-only root."""
    return [
        "# Pods a namespace enforcing the restricted Pod Security Standard admits: the image's own non-root",
        "# user, no privilege escalation, no capabilities, the runtime's seccomp profile; the root filesystem",
        "# read-only, with /tmp (logs, MLflow's and matplotlib's temporary files) an emptyDir.",
        *_expr(
            _Call(
                "k8s.V1PodSecurityContext",
                run_as_non_root=True,
                run_as_user=POD_UID,
                run_as_group=POD_UID,
                fs_group=POD_UID,
                seccomp_profile=_Call("k8s.V1SeccompProfile", type="RuntimeDefault"),
            ),
            0,
            "POD_SECURITY = ",
        ),
        *_expr(
            _Call(
                "k8s.V1SecurityContext",
                allow_privilege_escalation=False,
                capabilities=_Call("k8s.V1Capabilities", drop=["ALL"]),
                read_only_root_filesystem=True,
                run_as_non_root=True,
                run_as_user=POD_UID,
            ),
            0,
            "CONTAINER_SECURITY = ",
        ),
        *_expr(_Call("k8s.V1Volume", name="tmp", empty_dir=_Call("k8s.V1EmptyDirVolumeSource")), 0, "TMP_VOLUME = "),
        *_expr(_Call("k8s.V1VolumeMount", name="tmp", mount_path="/tmp"), 0, "TMP_MOUNT = "),
    ]


def _image_commit(image: str | None) -> str | None:
    """The commit an image was built from, when its tag names it: a SHA tag, or the Variable CI sets to one."""
    if image is None:
        return None
    _, tag = split_tag(image.partition("@")[0])
    if tag is not None and (tag.startswith("{{") or vcs.is_built_from(tag)):
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
        "# `mlops run` in the project's interpreter, each word quoted as bash reads it (paths may hold",
        "# spaces, & or quotes).",
        *_expr([_shell_word(w) for w in [python, "-m", "mlops_template", "run", "--project", root]], 0, "MLOPS = "),
        "# Every task of one DAG run joins one MLflow pipeline run, keyed by the DAG run's id.",
        *_expr([_shell_word(w) for w in _plan_arguments(steps, env)], 0, "ARGUMENTS = "),
        "",
        "",
        "def command(step: str) -> str:",
        '    """The shell command of one step: `mlops run` in the interpreter of the project."""',
        '    return " ".join(["exec", *MLOPS, "--step", step, *ARGUMENTS])',
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
    if any(marker in root + python for marker in ("{{", "{%", "{#")):  # Airflow renders bash_command as Jinja
        raise ConfigError(
            f"the project folder or interpreter path holds a Jinja marker ({{{{, {{% or {{#), which Airflow would "
            f"render in the task's command ({root!r}, {python!r}); move the project to a path without one"
        )
    return _header(comments, body)


def _shell_word(word: str) -> str:
    """A word as bash reads it; `{{ run_id }}` is quoted as a whole, for Airflow renders it first."""
    return "'{{ run_id }}'" if word == "{{ run_id }}" else shlex.quote(word)
