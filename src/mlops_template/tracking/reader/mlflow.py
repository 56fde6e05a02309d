"""The read-only questions through MLflow's client: any tracking store or server, any schema."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlops_template.config.load import Config, Environment
from mlops_template.tracking.reader import Reader, Where

if TYPE_CHECKING:
    from mlflow import MlflowClient

_PAGE = 5000


def mlflow_reader(config: Config, env: Environment) -> tuple[Reader, str]:
    """The reader through MLflow's client (any store), with the project's experiment created if need be."""
    import mlflow

    from mlops_template.tracking.connect import connect, quiet_mlflow

    quiet_mlflow()
    experiment_id = connect(config, env)
    return MlflowReader(mlflow.MlflowClient()), experiment_id


def download(run_id: str, path: str) -> bytes | None:
    """An artifact's bytes through MLflow's artifact repositories (a bucket, a server), or None."""
    import mlflow

    return MlflowReader(mlflow.MlflowClient()).artifact(run_id, path)


class MlflowReader:
    """The same questions through MLflow's client: any tracking store or server."""

    def __init__(self, client: MlflowClient) -> None:
        self._client = client

    def search(self, experiment_ids: list[str], where: Where, *, limit: int | None = None) -> list[Any]:
        found: list[Any] = []
        token = None
        while True:
            size = _PAGE if limit is None else min(_PAGE, limit - len(found))
            page = self._client.search_runs(
                experiment_ids,
                filter_string=where.mlflow_filter(),
                order_by=["attributes.start_time DESC"],
                max_results=size,
                page_token=token,
            )
            found.extend(page)
            token = page.token
            if not token or (limit is not None and len(found) >= limit):
                return found

    def get(self, run_id: str) -> Any | None:
        from mlflow.exceptions import MlflowException

        try:
            return self._client.get_run(run_id)
        except MlflowException as exc:
            if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "NOT_FOUND"):
                return None
            raise

    def experiments(self) -> list[tuple[str, str]]:
        return [(e.experiment_id, e.name) for e in self._client.search_experiments()]

    def versions(self, name: str, run_id: str | None = None) -> list[Any]:
        from mlflow.exceptions import MlflowException

        where = f"name='{name}'" + (f" and run_id='{run_id}'" if run_id is not None else "")
        try:
            found = self._client.search_model_versions(where)
        except MlflowException as exc:
            if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
                return []
            raise
        return sorted(found, key=lambda v: int(v.version))

    def aliases(self, name: str) -> dict[str, str]:
        from mlflow.exceptions import MlflowException

        try:
            found = self._client.get_registered_model(name).aliases
        except MlflowException as exc:
            if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "NOT_FOUND"):
                return {}
            raise
        return {alias: str(version) for alias, version in found.items()}

    def alias(self, name: str, alias: str) -> Any | None:
        from mlflow.exceptions import MlflowException

        try:
            return self._client.get_model_version_by_alias(name, alias)
        except MlflowException as exc:
            if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND"):
                return None
            raise

    def artifact(self, run_id: str, path: str) -> bytes | None:
        import tempfile

        from mlflow.exceptions import MlflowException

        with tempfile.TemporaryDirectory(prefix="mlops-artifact-") as tmp:
            try:
                local = self._client.download_artifacts(run_id, path, tmp)
            except (MlflowException, OSError):
                return None
            return Path(local).read_bytes()
