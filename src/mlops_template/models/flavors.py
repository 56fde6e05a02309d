"""Log and load a model through the MLflow flavour of its library, by the routes `models.trust` allows.

scikit-learn estimators and pipelines (and LightGBM's scikit-learn models)
are saved with skops, recording exactly the types found in the saved file,
each of which must be trusted (anything else could run code on load and is
refused). XGBoost and a LightGBM Booster use their own formats; an
`mlflow.pyfunc.PythonModel` the pyfunc flavour, which unpickles and so is
logged only where the environment allows pickle; anything else is logged by
a callable the step hands over, and checked the same way once logged.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlops_template.errors import ModelError
from mlops_template.models.pins import model_requirements
from mlops_template.models.trust import LIGHTGBM_BOOSTER, LIGHTGBM_TYPES, SKOPS, Trust, route, unpickles

if TYPE_CHECKING:
    import pandas as pd
    from mlflow.models.model import ModelInfo

SKLEARN, XGBOOST, LIGHTGBM, PYFUNC = "sklearn", "xgboost", "lightgbm", "pyfunc"

LogModel = Callable[[str], "ModelInfo"]


def flavor(model: Any) -> str | None:
    """Which flavour logs `model`: sklearn, xgboost, lightgbm, pyfunc, or None when none does."""
    import mlflow.pyfunc

    if isinstance(model, mlflow.pyfunc.PythonModel):
        return PYFUNC
    top = type(model).__module__.split(".", 1)[0]
    if top in (XGBOOST, LIGHTGBM):
        return top
    try:
        from sklearn.base import BaseEstimator
    except ImportError:  # pragma: no cover - scikit-learn is a dependency
        return None
    return SKLEARN if isinstance(model, BaseEstimator) else None


def log_model(
    model: Any,
    *,
    name: str,
    input_example: pd.DataFrame,
    log_model: LogModel | None = None,
    pip_requirements: list[str] | None = None,
    trust: Trust,
) -> ModelInfo:
    """Log `model` on the active run as artifact `name`; `log_model(name)` logs it instead when given.

    A model whose loading would unpickle is refused unless `trust` allows it:
    before logging when its kind shows it, else as soon as it is logged.
    """
    if log_model is not None:
        info = log_model(name)
        if not hasattr(info, "model_uri"):
            raise ModelError(
                f"log_model returned {type(info).__name__}, not the ModelInfo of the model it logged; "
                "return what mlflow.<flavour>.log_model(..., name=name) returns"
            )
    else:
        info = _log_by_flavour(
            model, name=name, input_example=input_example, pip_requirements=pip_requirements, trust=trust
        )
    reason = unpickles(info.flavors)
    if reason is not None:
        try:
            trust.refuse_pickle("the model logged", reason)
        except ModelError:
            _discard(info)
            raise
    return info


def _discard(info: ModelInfo) -> None:
    """Mark a logged model that is refused as failed, so that nothing takes it for a usable one."""
    import mlflow
    from mlflow.exceptions import MlflowException

    model_id = getattr(info, "model_id", None)
    if model_id:
        try:
            mlflow.MlflowClient().delete_logged_model(model_id)
        except MlflowException:  # the step fails either way; a leftover is marked by its failed run
            pass


def _log_by_flavour(
    model: Any, *, name: str, input_example: pd.DataFrame, pip_requirements: list[str] | None, trust: Trust
) -> ModelInfo:
    import mlflow

    kind = flavor(model)
    requirements = pip_requirements or model_requirements(model)
    input_example = served_example(input_example)
    common = dict(name=name, input_example=input_example, pip_requirements=requirements)
    if kind == PYFUNC:
        trust.refuse_pickle(f"the {type(model).__name__} to log", "an mlflow.pyfunc.PythonModel is cloudpickled")
        return mlflow.pyfunc.log_model(python_model=model, **common)
    signature = mlflow.models.infer_signature(input_example, model.predict(input_example))
    if kind == XGBOOST:
        import mlflow.xgboost

        return mlflow.xgboost.log_model(model, signature=signature, **common)
    if kind == LIGHTGBM:
        import mlflow.lightgbm

        if f"{type(model).__module__}.{type(model).__qualname__}" != LIGHTGBM_BOOSTER:  # a scikit-learn model: skops
            common.update(serialization_format=SKOPS, skops_trusted_types=trusted_types(model, trust, LIGHTGBM_TYPES))
        return mlflow.lightgbm.log_model(model, signature=signature, **common)
    if kind == SKLEARN:
        return mlflow.sklearn.log_model(
            model,
            signature=signature,
            serialization_format=SKOPS,
            skops_trusted_types=trusted_types(model, trust),
            **common,
        )
    raise ModelError(
        f"cannot log a {type(model).__module__}.{type(model).__qualname__}: it is not a scikit-learn, XGBoost or "
        "LightGBM model nor an mlflow.pyfunc.PythonModel; pass log_model=lambda name: "
        "mlflow.<flavour>.log_model(model, name=name) to propose_model"
    )


def served_example(example: pd.DataFrame) -> pd.DataFrame:
    """The input example with integer columns as doubles, as a served request brings them when one has a gap.

    The signature is inferred from it: an integer column in it would make a
    request whose column has a missing value fail MLflow's schema check.
    """
    import pandas as pd

    integers = [c for c in example.columns if pd.api.types.is_integer_dtype(example[c].dtype)]
    return example.astype(dict.fromkeys(integers, "float64")) if integers else example


def trusted_types(model: Any, trust: Trust | None = None, extra: frozenset[str] = frozenset()) -> list[str]:
    """The types skops must trust to load `model`; refuses any that `trust` does not (default: scikit-learn, numpy, scipy)."""
    import skops.io

    try:
        found = skops.io.get_untrusted_types(data=skops.io.dumps(model))
    except Exception as exc:  # noqa: BLE001 - skops raises many types; the cause is kept
        raise ModelError(f"skops cannot save this {type(model).__name__} ({exc}); wrap it as a pyfunc") from exc
    (trust or Trust()).refuse_types("the model", found, extra=extra)
    return found


def load(path: str | Path, trust: Trust, *, what: str = "the model") -> Any:
    """Load a downloaded model folder by the route `trust` allows (`models.trust.route`), else refuse it.

    Native models keep `predict_proba`, which probability scorers need. A
    skops file is loaded trusting exactly the types checked; a model that
    unpickles, only where `trust` allows it, through its flavour.
    """
    import mlflow

    how = route(path, trust, what=what)
    try:
        if how.kind == SKOPS:
            import skops.io

            return skops.io.load(how.file, trusted=list(how.types))
        if how.kind == XGBOOST:
            import mlflow.xgboost

            return mlflow.xgboost.load_model(str(path))
        if how.kind == LIGHTGBM:
            import mlflow.lightgbm

            return mlflow.lightgbm.load_model(str(path))
        return _load_unpickling(path)
    except ImportError as exc:
        raise ModelError(f"{what} at {path} needs {exc.name}, which is not installed; install it") from exc


def _load_unpickling(path: str | Path) -> Any:
    """A model the environment allows to unpickle, through its flavour (native when it has one)."""
    import mlflow
    from mlflow.models import Model

    flavors = Model.load(str(Path(path) / "MLmodel")).flavors
    if SKLEARN in flavors:
        import mlflow.sklearn

        return mlflow.sklearn.load_model(str(path))
    if LIGHTGBM in flavors:
        import mlflow.lightgbm

        return mlflow.lightgbm.load_model(str(path))
    return mlflow.pyfunc.load_model(str(path))
