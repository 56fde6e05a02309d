"""Find a project's pipeline: `[project] package` names the package whose `main` module holds it."""

from __future__ import annotations

import importlib
import sys

from mlops_template.config.load import Config
from mlops_template.errors import ConfigError, ProjectError, choices
from mlops_template.pipeline.pipeline import Pipeline


def load_pipeline(config: Config) -> Pipeline:
    """Import `<package>.main` from the project's `src/` and return its `pipeline`."""
    src = str(config.root / "src")
    if src not in sys.path:
        sys.path.insert(0, src)
    module_name = f"{config.package}.main"
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name):
            raise ProjectError(
                f"{config.path}: package '{config.package}' has no module 'main' under {src}; "
                "fix [project] package or create src/<package>/main.py"
            ) from exc
        raise ProjectError(f"{module_name}: cannot import '{exc.name}'; install it (pip install {exc.name})") from exc
    pipeline = getattr(module, "pipeline", None)
    if not isinstance(pipeline, Pipeline):
        raise ProjectError(f"{module_name} has no `pipeline = Pipeline([...])`; define one listing the steps in order")
    check_step_tables(config, pipeline.names)
    return pipeline


def check_step_tables(config: Config, steps: list[str]) -> None:
    """Refuse a `[steps.<name>]` table for a step the pipeline does not have: a typo would be silently ignored."""
    for name in config.steps:
        if name not in steps:
            raise ConfigError(
                f"{config.path}: [steps.{name}] names no step of the pipeline; {choices(steps, name)} "
                "(rename or remove the table)"
            )
