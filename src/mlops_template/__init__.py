"""mlops-template: tracked, reproducible ML pipelines with versioned data and a gated model registry."""

from __future__ import annotations

from .config import Config, Environment, load_config
from .context import StepContext
from .errors import MlopsError
from .pipeline import Pipeline, Step

__all__ = ["Config", "Environment", "MlopsError", "Pipeline", "Step", "StepContext", "load_config"]
