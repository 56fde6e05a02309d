"""A model's outputs computed in a process of its own that holds no credentials.

Promotion scores a model that came from another environment, whose registry
others may write to, while the target's credentials are in use. The model is
loaded and run in a child process whose environment keeps only what Python
needs: no AWS or MLflow variables, no profile or credentials file
(`AWS_SHARED_CREDENTIALS_FILE`, `AWS_CONFIG_FILE` point at nothing, `HOME`
at an empty folder), no instance metadata. It gets the rows as parquet and
returns what the model gives for each (predictions, and class probabilities
or decision values when it has them) as parquet and JSON, so nothing it
returns is unpickled. The gate then scores those outputs on any subset of
the rows through :class:`Recorded`, which answers for the model by row.

The child cannot read the target's credentials from the environment; a file
the same user can read stays readable (isolating that takes another user or
a container).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlops_template.errors import MlopsError, ModelError
from mlops_template.models.trust import Trust

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

# What the child keeps of the parent's environment: what Python, locales and temporary files need.
KEPT = ("PATH", "LANG", "LANGUAGE", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR", "PYTHONHASHSEED", "VIRTUAL_ENV", "SYSTEMROOT")
_OUTPUTS = ("predict", "predict_proba", "decision_function")


def clean_environment(home: Path) -> dict[str, str]:
    """The child's environment: `KEPT` from this one, the import path, and every credential source pointed at nothing."""
    env = {name: os.environ[name] for name in KEPT if name in os.environ}
    env.update(
        HOME=str(home),
        PYTHONPATH=os.pathsep.join(path for path in sys.path if path),
        MLFLOW_DISABLE_TELEMETRY="true",
        AWS_SHARED_CREDENTIALS_FILE=os.devnull,
        AWS_CONFIG_FILE=os.devnull,
        AWS_EC2_METADATA_DISABLED="true",
    )
    return env


def outputs_apart(folder: Path, rows: pd.DataFrame, trust: Trust, *, what: str) -> Recorded:
    """Load the model in `folder` as `trust` allows and run it on `rows`, in a child process holding no credentials."""
    import pandas as pd

    with tempfile.TemporaryDirectory(prefix="mlops-apart-") as tmp:
        work = Path(tmp)
        (work / "home").mkdir()
        rows.reset_index(drop=True).to_parquet(work / "rows.parquet", index=False)
        order = {"folder": str(folder), "what": what, "trust": [list(trust.trusted_types), trust.allow_pickle]}
        (work / "order.json").write_text(json.dumps({**order, "environment": trust.environment}))
        done = subprocess.run(
            [sys.executable, "-m", __name__, str(work)],
            env=clean_environment(work / "home"),
            cwd=work,
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            lines = [line for line in done.stderr.splitlines() if line.strip()]
            raise ModelError(f"{what} could not be run on the gate's rows: {lines[-1] if lines else 'no output'}")
        meta = json.loads((work / "meta.json").read_text())
        table = pd.read_parquet(work / "outputs.parquet")
    return Recorded(rows.index, table, meta)


class Recorded:
    """A model's recorded outputs on some rows, answering `predict` (and the rest) for any subset of them by index."""

    def __init__(self, index: pd.Index, table: pd.DataFrame, meta: dict[str, Any]) -> None:
        self._position = index
        self._table = table
        self._meta = meta
        self._estimator_type = meta.get("estimator_type")
        if meta.get("classes") is not None:
            self.classes_ = _array(meta["classes"])

    def _rows(self, X: pd.DataFrame, prefix: str) -> np.ndarray:
        columns = [c for c in self._table.columns if c == prefix or c.startswith(prefix + ":")]
        at = self._position.get_indexer(X.index)
        if (at < 0).any():
            raise KeyError("rows the model was not run on")
        values = self._table[columns].to_numpy()[at]
        return values[:, 0] if columns == [prefix] else values

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        return self._rows(X, "predict")

    @property
    def predict_proba(self):
        if "predict_proba" not in self._meta["outputs"]:
            raise AttributeError("predict_proba")
        return lambda X: self._rows(X, "predict_proba")

    @property
    def decision_function(self):
        if "decision_function" not in self._meta["outputs"]:
            raise AttributeError("decision_function")
        return lambda X: self._rows(X, "decision_function")

    def __sklearn_tags__(self):
        from mlops_template.models.scoring import estimator_tags

        return estimator_tags(self._estimator_type)


def _array(values: list[Any]) -> np.ndarray:
    import numpy as np

    return np.asarray(values)


def _run(work: Path) -> None:
    """The child: load the model, run it on the rows, write its outputs."""
    import numpy as np
    import pandas as pd
    from sklearn.base import is_classifier, is_regressor

    from mlops_template.models import flavors

    order = json.loads((work / "order.json").read_text())
    types, allow = order["trust"]
    trust = Trust(tuple(types), allow, order["environment"])
    model = flavors.load(order["folder"], trust, what=order["what"])
    X = pd.read_parquet(work / "rows.parquet")
    columns: dict[str, Any] = {}
    outputs = []
    for method in _OUTPUTS:
        if method != "predict" and not hasattr(model, method):
            continue
        out = np.asarray(getattr(model, method)(X))
        out = out.ravel() if out.ndim == 2 and out.shape[1] == 1 else out
        if out.ndim == 1:
            columns[method] = out
        else:
            columns.update({f"{method}:{i}": out[:, i] for i in range(out.shape[1])})
        outputs.append(method)
    try:
        kind = "classifier" if is_classifier(model) else "regressor" if is_regressor(model) else None
    except Exception:  # noqa: BLE001 - not an estimator scikit-learn can tell (a pyfunc): scored by predict
        kind = None
    classes = getattr(model, "classes_", None)
    meta = {"outputs": outputs, "estimator_type": kind, "classes": None if classes is None else classes.tolist()}
    pd.DataFrame(columns).to_parquet(work / "outputs.parquet", index=False)
    (work / "meta.json").write_text(json.dumps(meta))


if __name__ == "__main__":
    try:
        _run(Path(sys.argv[1]))
    except MlopsError as exc:
        print(exc, file=sys.stderr)
        sys.exit(2)
    except Exception as exc:  # noqa: BLE001 - a foreign model may raise anything; one line goes back
        print(f"{type(exc).__name__}: {exc}", file=sys.stderr)
        sys.exit(1)
