"""Which models may be loaded: only by a route that runs no code from the model's files, unless a project allows it.

Loading a model is reading files someone with registry write access wrote.
The routes that run none of their code:

- scikit-learn (and LightGBM's scikit-learn models) saved with skops, when
  every type the file holds was recorded when it was saved and is trusted:
  scikit-learn's, numpy's, scipy's (LightGBM's own classes for its flavour),
  and those the project lists in `[model] trusted_types`;
- XGBoost's own format, rebuilding a class of the xgboost package;
- LightGBM's own format for a Booster.

Anything else unpickles, which runs code from the files: a pyfunc
`PythonModel` (cloudpickled), a pickle or cloudpickle serialisation, a
loader module the model names. It is refused when it is logged, and again
when it is loaded, unless `[model] allow_pickle = true` for the environment
(`[environments.<name>.model]`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlops_template.errors import IntegrityError, ModelError

if TYPE_CHECKING:
    from mlops_template.config.load import ModelConfig

SKOPS = "skops"
TRUSTED_PACKAGES = ("sklearn.", "numpy.", "scipy.")
# The classes MLflow's LightGBM flavour itself trusts in a skops file of a LightGBM scikit-learn model.
LIGHTGBM_TYPES = frozenset(
    {"collections.OrderedDict", "lightgbm.basic.Booster", "lightgbm.sklearn.LGBMClassifier",
     "lightgbm.sklearn.LGBMRegressor", "lightgbm.sklearn.LGBMRanker"}
)  # fmt: skip
LIGHTGBM_BOOSTER = "lightgbm.basic.Booster"


@dataclass(frozen=True)
class Trust:
    """What one environment lets be loaded: extra skops types, and whether models that unpickle are allowed."""

    trusted_types: tuple[str, ...] = ()
    allow_pickle: bool = False
    environment: str = ""  # named in refusals, as where to allow more

    @classmethod
    def of(cls, model: ModelConfig, environment: str) -> Trust:
        return cls(tuple(model.trusted_types), model.allow_pickle, environment)

    def untrusted(self, types: list[str], *, extra: frozenset[str] = frozenset()) -> list[str]:
        """Those of `types` that are not trusted: not scikit-learn, numpy or scipy, `extra`, nor listed by the project."""
        listed = tuple(t for t in self.trusted_types if t.endswith("."))
        return sorted(
            t
            for t in types
            if not t.startswith(TRUSTED_PACKAGES + listed) and t not in extra and t not in self.trusted_types
        )

    def refuse_pickle(self, what: str, reason: str) -> None:
        """Raise unless this environment allows models that unpickle."""
        if self.allow_pickle:
            return
        where = f"[environments.{self.environment}.model]" if self.environment else "[model]"
        raise ModelError(
            f"{what}: loading it unpickles ({reason}), which runs code from its files; use a scikit-learn, XGBoost "
            f"or LightGBM model, or, where the team accepts that, set allow_pickle = true in {where} of mlops.toml"
        )

    def refuse_types(self, what: str, types: list[str], *, extra: frozenset[str] = frozenset()) -> None:
        """Raise naming the types of a skops file outside the allowlist."""
        refused = self.untrusted(types, extra=extra)
        if refused:
            raise ModelError(
                f"{what} holds types skops will not load without trusting their code: {', '.join(refused)}; use "
                "scikit-learn, numpy and scipy types only, or list these in [model] trusted_types of mlops.toml "
                "if the team trusts their code"
            )


@dataclass(frozen=True)
class Route:
    """How a model folder is loaded: `skops` (its file and the types it holds), or a flavour's own loader."""

    kind: str  # "skops", "xgboost", "lightgbm" (a Booster), or "pickle": the flavour's loader, which unpickles
    file: Path | None = None
    types: tuple[str, ...] = ()


def unpickles(flavors: dict[str, Any]) -> str | None:
    """Why loading a model with these MLmodel `flavors` would unpickle, or None when its route runs no code of its."""
    if "sklearn" in flavors:
        return _serialised("scikit-learn", flavors["sklearn"])
    if "xgboost" in flavors:
        cls = str(flavors["xgboost"].get("model_class", "xgboost.core.Booster"))
        return None if cls.startswith("xgboost.") else f"its XGBoost flavour builds {cls}, not an xgboost class"
    if "lightgbm" in flavors:
        conf = flavors["lightgbm"]
        return None if conf.get("model_class", LIGHTGBM_BOOSTER) == LIGHTGBM_BOOSTER else _serialised("LightGBM", conf)
    pyfunc = flavors.get("python_function", {})
    if "python_model" in pyfunc or "cloudpickle_version" in pyfunc:
        return "an mlflow.pyfunc.PythonModel is cloudpickled"
    if pyfunc.get("loader_module"):
        return f"it is loaded by {pyfunc['loader_module']}, which this library does not check"
    return "it has no flavour this library loads"


def _serialised(library: str, conf: dict[str, Any]) -> str | None:
    kind = conf.get("serialization_format", "pickle")
    return None if kind == SKOPS else f"its {library} flavour is saved as {kind}"


def route(folder: str | Path, trust: Trust, *, what: str) -> Route:
    """How the model in `folder` may be loaded, after checking it; refused with the reason otherwise.

    A skops file's types must all have been recorded when it was saved (its
    MLmodel names them) and be trusted.
    """
    from mlflow.models import Model

    folder = Path(folder)
    flavors = Model.load(str(folder / "MLmodel")).flavors
    reason = unpickles(flavors)
    if reason is not None:
        trust.refuse_pickle(what, reason)
        return Route("pickle")
    if "sklearn" in flavors:
        return _skops(folder, flavors["sklearn"], "pickled_model", trust, what=what)
    if "xgboost" in flavors:
        return Route("xgboost")
    conf = flavors["lightgbm"]
    if conf.get("model_class", LIGHTGBM_BOOSTER) == LIGHTGBM_BOOSTER:
        return Route("lightgbm")
    return _skops(folder, conf, "data", trust, what=what, extra=LIGHTGBM_TYPES)


def _skops(
    folder: Path, conf: dict[str, Any], key: str, trust: Trust, *, what: str, extra: frozenset[str] = frozenset()
) -> Route:
    import skops.io

    file = folder / str(conf.get(key, ""))
    try:
        types = skops.io.get_untrusted_types(file=file)
    except Exception as exc:  # noqa: BLE001 - skops raises many types for a file that is not its own
        raise IntegrityError(f"{what}: {file.name} is not a readable skops file ({exc}); restore the model") from exc
    recorded = set(conf.get("skops_trusted_types") or [])
    unrecorded = sorted(set(types) - recorded - extra)
    if unrecorded:
        raise IntegrityError(
            f"{what} holds types not recorded when it was saved ({', '.join(unrecorded)}): its file was replaced; "
            "restore the model or train it again"
        )
    trust.refuse_types(what, types, extra=extra)
    return Route(SKOPS, file, tuple(types))
