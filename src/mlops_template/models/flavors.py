"""Log and load a model through the MLflow flavour of its library.

scikit-learn estimators and pipelines are saved with skops, trusting exactly
the types found in the saved file when they come from scikit-learn, numpy or
scipy (anything else could run code on load and is refused). XGBoost and
LightGBM use their own flavours; an `mlflow.pyfunc.PythonModel` the pyfunc
flavour; anything else is logged by a callable the step hands over.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlops_template.errors import ModelError
from mlops_template.models.pins import model_requirements

if TYPE_CHECKING:
    import pandas as pd
    from mlflow.models.model import ModelInfo

SKLEARN, XGBOOST, LIGHTGBM, PYFUNC = "sklearn", "xgboost", "lightgbm", "pyfunc"
_TRUSTED_MODULES = ("sklearn.", "numpy.", "scipy.")

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
) -> ModelInfo:
    """Log `model` on the active run as artifact `name`; `log_model(name)` logs it instead when given."""
    import mlflow

    if log_model is not None:
        info = log_model(name)
        if not hasattr(info, "model_uri"):
            raise ModelError(
                f"log_model returned {type(info).__name__}, not the ModelInfo of the model it logged; "
                "return what mlflow.<flavour>.log_model(..., name=name) returns"
            )
        return info
    kind = flavor(model)
    requirements = pip_requirements or model_requirements(model)
    input_example = served_example(input_example)
    common = dict(name=name, input_example=input_example, pip_requirements=requirements)
    if kind == PYFUNC:
        return mlflow.pyfunc.log_model(python_model=model, **common)
    signature = mlflow.models.infer_signature(input_example, model.predict(input_example))
    if kind == XGBOOST:
        import mlflow.xgboost

        return mlflow.xgboost.log_model(model, signature=signature, **common)
    if kind == LIGHTGBM:
        import mlflow.lightgbm

        return mlflow.lightgbm.log_model(model, signature=signature, **common)
    if kind == SKLEARN:
        return mlflow.sklearn.log_model(
            model,
            signature=signature,
            serialization_format="skops",
            skops_trusted_types=trusted_types(model),
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


def trusted_types(model: Any) -> list[str]:
    """The types skops must trust to load `model`; refuses any outside scikit-learn, numpy and scipy."""
    import skops.io

    try:
        found = skops.io.get_untrusted_types(data=skops.io.dumps(model))
    except Exception as exc:  # noqa: BLE001 - skops raises many types; the cause is kept
        raise ModelError(f"skops cannot save this {type(model).__name__} ({exc}); wrap it as a pyfunc") from exc
    refused = sorted(t for t in found if not t.startswith(_TRUSTED_MODULES))
    if refused:
        raise ModelError(
            f"the model holds types skops will not load without trusting their code: {', '.join(refused)}; "
            "use scikit-learn, numpy and scipy types only, or pass log_model= (e.g. an XGBoost/LightGBM "
            "flavour, or mlflow.pyfunc.log_model) to propose_model"
        )
    return found


def load(path: str | Path) -> Any:
    """Load a downloaded model folder with its native flavour when it has one, else as a pyfunc.

    Native models keep `predict_proba`, which probability scorers need.
    """
    import mlflow
    from mlflow.models import Model

    flavors = Model.load(str(Path(path) / "MLmodel")).flavors
    try:
        if SKLEARN in flavors:
            import mlflow.sklearn

            return mlflow.sklearn.load_model(str(path))
        if XGBOOST in flavors:
            import mlflow.xgboost

            return mlflow.xgboost.load_model(str(path))
        if LIGHTGBM in flavors:
            import mlflow.lightgbm

            return mlflow.lightgbm.load_model(str(path))
        return mlflow.pyfunc.load_model(str(path))
    except ImportError as exc:
        raise ModelError(f"the model at {path} needs {exc.name}, which is not installed; install it") from exc
