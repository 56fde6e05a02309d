"""Load and validate `mlops.toml`: the project, its environments, step params and model gate.

Every problem is reported as one :class:`ConfigError` naming the file, the key
and what would be valid, so a typo never silently falls back to a default.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from mlops_template.config.dag import DagSettings, parse_dag
from mlops_template.config.data import ENGINES, parse_connections, parse_engine, parse_validation
from mlops_template.config.environ import user_value
from mlops_template.config.keys import check_keys, check_table
from mlops_template.config.resources import Resources, parse_resources
from mlops_template.errors import ConfigError, choices
from mlops_template.redact import redacted_repr

CONFIG_FILE = "mlops.toml"
DEFAULT_ENVIRONMENT = "local"

_TOP_KEYS = {"project", "environments", "params", "steps", "model", "dag", "data", "run"}
_RUN_KEYS = {"cache": bool}  # [run], also per environment
_PROJECT_KEYS = {"name": str, "package": str, "default_environment": str}
_ENVIRONMENT_KEYS = {
    "storage": str,
    "tracking_uri": str,
    "registry_uri": str,
    "aws_profile": str,
    "aws_region": str,
    "s3_endpoint_url": str,
    "dask_scheduler": str,
    "tracking_timeout": int,
    "data": dict,
    "model": dict,
    "connections": dict,
    "run": dict,
}
_STEP_KEYS = {"params": dict, "resources": dict, "cache": bool}
_MODEL_KEYS = {"name": str, "task": str, "gate": dict, "trusted_types": list, "allow_pickle": bool}
# What an environment may set for itself in [environments.<name>.model]: name and task are the project's, one model
# across environments, so that promotion finds it and its metric means the same thing everywhere.
_ENVIRONMENT_MODEL_KEYS = {k: v for k, v in _MODEL_KEYS.items() if k not in ("name", "task")}
_GATE_KEYS = {"metric": str, "min": object, "beat_champion": bool, "on_champion_error": str}
ON_CHAMPION_ERROR = ("refuse", "min")


@redacted_repr
@dataclass(frozen=True)
class Environment:
    """A named target: where data lives, where runs are tracked, which cloud account.

    Its repr hides the passwords and tokens a store URI may carry.
    """

    name: str
    storage: str
    tracking_uri: str
    registry_uri: str | None = None
    aws_profile: str | None = None
    aws_region: str | None = None
    s3_endpoint_url: str | None = None
    dask_scheduler: str | None = None  # unset: a LocalCluster per process, when a step first asks for Dask
    tracking_timeout: int = 60  # seconds a tracking server that stopped answering may hold a step
    engine: str = "auto"  # [data] engine, or this environment's [environments.<name>.data] engine
    validation: str = "error"  # [data] validation: what a table failing its schema does (error, warn, off)
    # [environments.<name>.connections]: name -> SQLAlchemy URL, `${VAR}` read from the environment when used
    connections: tuple[tuple[str, str], ...] = ()
    cache: bool = True  # [run] cache, or this environment's [environments.<name>.run] cache

    @property
    def is_remote_storage(self) -> bool:
        return "://" in self.storage and not self.storage.startswith("file://")


@dataclass(frozen=True)
class Gate:
    """The approval gate a trained model must pass before it is registered.

    `metric` is `f1`/`precision`/`recall` (macro averages), `rmse`/`mae`/`mse`
    or a scikit-learn scorer name; its name gives its direction
    (`config.metrics.higher_is_better`), and for an error `min` is a ceiling.
    """

    metric: str = "f1"
    min: float | None = None  # `min = false` in the file: no threshold, only `beat_champion` applies
    beat_champion: bool = True
    # What a champion that cannot be loaded or scored means: "refuse" the candidate (fail closed), or let "min" decide.
    on_champion_error: str = "refuse"


@dataclass(frozen=True)
class ModelConfig:
    """`[model]`, as one environment sees it (its `[environments.<name>.model]` over the project's).

    `trusted_types` are the types, besides scikit-learn's, numpy's and scipy's,
    a skops file may hold and still be loaded (`module.Class`, or `package.` for
    a whole package); `allow_pickle` lets a model whose loading unpickles (a
    pyfunc, cloudpickle) be logged and loaded.
    """

    name: str
    task: str = "classification"
    gate: Gate = field(default_factory=Gate)
    trusted_types: tuple[str, ...] = ()
    allow_pickle: bool = False


@dataclass(frozen=True)
class StepConfig:
    params: dict[str, Any] = field(default_factory=dict)
    resources: Resources = field(default_factory=Resources)
    cache: bool | None = None  # [steps.<name>] cache: over the environment's [run] cache when set


@dataclass(frozen=True)
class Config:
    """The whole of a project's `mlops.toml`, with paths resolved against its folder."""

    root: Path
    name: str
    package: str
    environments: dict[str, Environment]
    model: ModelConfig
    params: dict[str, Any] = field(default_factory=dict)
    environment_models: dict[str, ModelConfig] = field(default_factory=dict)  # those an environment overrides
    steps: dict[str, StepConfig] = field(default_factory=dict)
    default_environment: str = DEFAULT_ENVIRONMENT
    dag: DagSettings = field(default_factory=DagSettings)

    @property
    def path(self) -> Path:
        return self.root / CONFIG_FILE

    def environment(self, name: str | None = None) -> Environment:
        """The chosen environment, with `MLOPS_*`, `MLFLOW_*` and `AWS_*` overrides applied.

        The name comes from the argument, else `MLOPS_ENVIRONMENT`, else the
        project's default.
        """
        name = name or os.environ.get("MLOPS_ENVIRONMENT") or self.default_environment
        if name not in self.environments:
            raise ConfigError(
                f"{self.path}: unknown environment '{name}'; "
                f"{choices(self.environments, name)} (add it under [environments.{name}])"
            )
        return _apply_overrides(self.environments[name], self.root)

    def model_in(self, environment: str) -> ModelConfig:
        """`[model]` as environment `environment` has it: its own `[environments.<name>.model]` keys over the project's."""
        return self.environment_models.get(environment, self.model)

    def step(self, name: str) -> StepConfig:
        return self.steps.get(name, StepConfig())

    def caches(self, step: str, environment: Environment) -> bool:
        """Whether `step` may be reused from an earlier run: `[steps.<step>] cache`, else the environment's `[run]`."""
        own = self.step(step).cache
        return environment.cache if own is None else own

    def step_params(self, name: str) -> dict[str, Any]:
        """Params a step sees: the shared `[params]`, then `[steps.<name>.params]`."""
        return {**self.params, **self.step(name).params}


def find_root(start: Path | None = None) -> Path:
    """The nearest folder at or above `start` that holds `mlops.toml`."""
    start = (start or Path.cwd()).resolve()
    for folder in (start, *start.parents):
        if (folder / CONFIG_FILE).is_file():
            return folder
    raise ConfigError(
        f"no {CONFIG_FILE} in {start} or any parent folder; "
        "run this inside a project made by `mlops new`, or pass --project DIR"
    )


def load_config(root: Path | str | None = None) -> Config:
    """Read and validate `mlops.toml` in `root` (default: the nearest one above the cwd)."""
    root = find_root(Path(root) if root else None)
    path = root / CONFIG_FILE
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc}); fix the syntax at that line") from exc
    return _parse(raw, root, path)


def _parse(raw: dict[str, Any], root: Path, path: Path) -> Config:
    check_keys(raw, _TOP_KEYS, path, "")
    project = _table(raw, "project", path, required=True)
    check_table(project, _PROJECT_KEYS, path, "project")
    for key in ("name", "package"):
        if key not in project:
            raise ConfigError(f"{path}: [project] needs '{key}'; add `{key} = \"...\"`")
    if not project["package"].isidentifier():
        raise ConfigError(
            f"{path}: [project] package '{project['package']}' is not a Python identifier; "
            "use letters, digits and underscores"
        )

    data_engine = parse_engine(_table(raw, "data", path), path, "data") or "auto"
    data_validation = parse_validation(_table(raw, "data", path), path, "data") or "error"
    run_table = _table(raw, "run", path)
    check_table(run_table, _RUN_KEYS, path, "run")
    model_table = _table(raw, "model", path)
    check_table(model_table, _MODEL_KEYS, path, "model")
    environments, environment_models = {}, {}
    for env_name, table in _table(raw, "environments", path, required=True).items():
        where = f"environments.{env_name}"
        if not isinstance(table, dict):
            raise ConfigError(f"{path}: [{where}] must be a table")
        check_table(table, _ENVIRONMENT_KEYS, path, where)
        for key in ("storage", "tracking_uri"):
            if key not in table:
                raise ConfigError(f"{path}: [{where}] needs '{key}'")
        if table.get("tracking_timeout", 60) < 10:
            raise ConfigError(f"{path}: [{where}] tracking_timeout must be at least 10 (seconds)")
        fields = {k: v for k, v in table.items() if k not in ("data", "model", "connections", "run")}
        check_table(table.get("run", {}), _RUN_KEYS, path, f"{where}.run")
        fields["cache"] = {**run_table, **table.get("run", {})}.get("cache", True)
        engine = parse_engine(table.get("data", {}), path, f"{where}.data") or data_engine
        validation = parse_validation(table.get("data", {}), path, f"{where}.data") or data_validation
        connections = parse_connections(table.get("connections", {}), path, f"{where}.connections")
        environments[env_name] = _resolve_paths(
            Environment(name=env_name, engine=engine, validation=validation, connections=connections, **fields), root
        )
        if "model" in table:
            own = table["model"]
            check_table(own, _ENVIRONMENT_MODEL_KEYS, path, f"{where}.model")
            gate = {**model_table.get("gate", {}), **own.get("gate", {})}
            merged = {**model_table, **own, "gate": gate}
            environment_models[env_name] = _model(merged, project["name"], path, f"{where}.model")
    if not environments:
        raise ConfigError(f"{path}: [environments] is empty; add at least [environments.local]")

    default_env = project.get("default_environment", DEFAULT_ENVIRONMENT)
    if default_env not in environments:
        raise ConfigError(
            f"{path}: [project] default_environment '{default_env}' is not defined; "
            f"{choices(environments, default_env)}"
        )

    steps = {}
    for step_name, table in _table(raw, "steps", path).items():
        where = f"steps.{step_name}"
        if not isinstance(table, dict):
            raise ConfigError(f"{path}: [{where}] must be a table")
        check_table(table, _STEP_KEYS, path, where)
        resources = parse_resources(table.get("resources", {}), path, f"{where}.resources")
        steps[step_name] = StepConfig(
            params=dict(table.get("params", {})), resources=resources, cache=table.get("cache")
        )

    model = _model(model_table, project["name"], path, "model")

    return Config(
        root=root,
        name=project["name"],
        package=project["package"],
        environments=environments,
        model=model,
        params=dict(_table(raw, "params", path)),
        environment_models=environment_models,
        steps=steps,
        default_environment=default_env,
        dag=parse_dag(_table(raw, "dag", path), path),
    )


def _model(table: dict[str, Any], project: str, path: Path, where: str) -> ModelConfig:
    """`[model]`: the task decides the default gate metric; a metric must fit the task; `min` is required."""
    from mlops_template.config.metrics import DEFAULT_METRIC, metric_problem

    task = table.get("task", "classification")
    if task not in DEFAULT_METRIC:
        raise ConfigError(f"{path}: [{where}] task '{task}' is unknown; {choices(DEFAULT_METRIC, task)}")
    gate_table = table.get("gate", {})
    if isinstance(gate_table, dict) and "higher_is_better" in gate_table:
        raise ConfigError(
            f"{path}: [{where}.gate] remove 'higher_is_better': the metric's name gives its direction "
            "(rmse, mae, mse: lower is better, and min is a ceiling; f1, r2 and scikit-learn scorers, "
            "which negate their losses as neg_*: higher)"
        )
    check_table(gate_table, _GATE_KEYS, path, f"{where}.gate")
    on_error = gate_table.get("on_champion_error", "refuse")
    if on_error not in ON_CHAMPION_ERROR:
        raise ConfigError(
            f"{path}: [{where}.gate] on_champion_error '{on_error}' is unknown; "
            f"{choices(ON_CHAMPION_ERROR, on_error)} "
            "(refuse: a champion that cannot be scored refuses the candidate; min: then only min decides)"
        )
    metric = gate_table.get("metric", DEFAULT_METRIC[task])
    problem = metric_problem(metric, task)
    if problem:
        raise ConfigError(f"{path}: [{where}.gate] metric {problem}")
    rest = {k: v for k, v in gate_table.items() if k not in ("metric", "min")}
    gate = Gate(metric=metric, min=_gate_min(gate_table, path, where), **rest)
    return ModelConfig(
        name=table.get("name", project),
        task=task,
        gate=gate,
        trusted_types=_trusted_types(table.get("trusted_types", []), path, where),
        allow_pickle=table.get("allow_pickle", False),
    )


def _gate_min(gate: dict[str, Any], path: Path, where: str) -> float | None:
    """The gate's threshold; required, so that no model is registered for want of one: `min = false` means none."""
    if "min" not in gate:
        raise ConfigError(
            f"{path}: [{where}] gate needs 'min': the score a model must reach (for rmse, mae, mse: the most it "
            "may reach), e.g. gate = { min = 0.8 }, or `min = false` to register on beat_champion alone"
        )
    value = gate["min"]
    if value is False:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{path}: [{where}.gate] min must be a number or false, got {type(value).__name__} {value!r}")
    return float(value)


def _trusted_types(value: list[Any], path: Path, where: str) -> tuple[str, ...]:
    """`trusted_types`: dotted type names (`module.Class`), or a package with a trailing dot (`mypackage.`)."""
    for name in value:
        if not isinstance(name, str) or not all(part.isidentifier() for part in name.removesuffix(".").split(".")):
            raise ConfigError(
                f"{path}: [{where}] trusted_types holds {name!r}; list type names as `module.Class`, "
                "or a whole package as `package.`"
            )
    return tuple(value)


def _table(raw: dict[str, Any], key: str, path: Path, *, required: bool = False) -> dict[str, Any]:
    if key not in raw:
        if required:
            raise ConfigError(f"{path}: missing [{key}] table; see the template's mlops.toml")
        return {}
    value = raw[key]
    if not isinstance(value, dict):
        raise ConfigError(f"{path}: '{key}' must be a table ([{key}]), not {type(value).__name__}")
    return value


def _resolve_paths(env: Environment, root: Path) -> Environment:
    """Make a local storage folder and a relative SQLite path absolute, so any cwd works."""
    storage = env.storage
    if "://" not in storage:
        storage = str((root / storage).resolve())
    return replace(
        env,
        storage=storage,
        tracking_uri=_absolute_sqlite(env.tracking_uri, root),
        registry_uri=_absolute_sqlite(env.registry_uri, root) if env.registry_uri else None,
    )


def _absolute_sqlite(uri: str, root: Path) -> str:
    prefix = "sqlite:///"
    if uri.startswith(prefix) and not uri.startswith(prefix + "/"):
        return prefix + str((root / uri[len(prefix) :]).resolve())
    return _with_driver(uri)


def _with_driver(uri: str) -> str:
    """`postgresql://` (or `postgres://`) with the driver the library installs: psycopg2.

    SQLAlchemy 2.1 reads a bare `postgresql://` as psycopg 3, which is not
    installed; a URI that names its driver (`postgresql+psycopg://`) keeps it.
    """
    for scheme in ("postgresql://", "postgres://"):
        if uri.startswith(scheme):
            return "postgresql+psycopg2://" + uri[len(scheme) :]
    return uri


def _apply_overrides(env: Environment, root: Path) -> Environment:
    """The user's variables override the file; what the library set for an environment in use does not."""
    overrides = {
        "storage": user_value("MLOPS_STORAGE"),
        "tracking_uri": user_value("MLFLOW_TRACKING_URI"),
        "registry_uri": user_value("MLFLOW_REGISTRY_URI"),
        "aws_profile": user_value("AWS_PROFILE"),
        "aws_region": user_value("AWS_REGION") or user_value("AWS_DEFAULT_REGION"),
        "s3_endpoint_url": user_value("AWS_ENDPOINT_URL_S3") or user_value("AWS_ENDPOINT_URL"),
        "dask_scheduler": user_value("MLOPS_DASK_SCHEDULER"),
        "engine": user_value("MLOPS_ENGINE"),
    }
    if overrides["engine"] and overrides["engine"] not in ENGINES:
        raise ConfigError(f"MLOPS_ENGINE '{overrides['engine']}' is unknown; {choices(ENGINES, overrides['engine'])}")
    env = replace(env, **{k: v for k, v in overrides.items() if v})
    # Paths from mlops.toml are already absolute; relative ones from variables are the cwd's.
    return _resolve_paths(env, Path.cwd())
