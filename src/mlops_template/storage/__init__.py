"""Where an environment keeps its data: one small interface, one module per backend.

Steps never see a backend: they call :class:`Storage` methods with keys such
as ``datasets/processed.parquet`` and the same code runs on a laptop folder
or an S3 bucket.
"""

from __future__ import annotations

from mlops_template.config.aws import usable_profile
from mlops_template.config.load import Environment
from mlops_template.errors import StorageError
from mlops_template.storage.base import Storage
from mlops_template.storage.local import LocalStorage
from mlops_template.storage.s3 import S3Storage

__all__ = ["LocalStorage", "S3Storage", "Storage", "open_storage"]


def open_storage(env: Environment, *, check: bool = False) -> Storage:
    """The storage an environment's `storage` URI points at; with `check`, probed first (:meth:`Storage.check`).

    Check before writing anything or starting a run: a missing bucket, denied
    credentials or a wrong endpoint then fail in seconds, naming the environment.
    """
    storage = _open(env)
    if check:
        try:
            storage.check()
        except StorageError as exc:
            raise StorageError(f"environment '{env.name}': {exc}") from exc
    return storage


def _open(env: Environment) -> Storage:
    uri = env.storage
    if uri.startswith("s3://"):
        profile = usable_profile(env.aws_profile, environment=env.name)
        return S3Storage(uri, profile=profile, region=env.aws_region, endpoint_url=env.s3_endpoint_url)
    if "://" in uri and not uri.startswith("file://"):
        from mlops_template.errors import ConfigError

        scheme = uri.split("://", 1)[0]
        raise ConfigError(
            f"environment '{env.name}': storage scheme '{scheme}://' is not supported; "
            "use a local folder or an s3:// URI"
        )
    return LocalStorage(uri.removeprefix("file://"))
