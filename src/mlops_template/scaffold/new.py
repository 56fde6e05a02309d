"""`mlops new`: render the project template with copier, vendor this library, lock, and commit it to a new git repository."""

from __future__ import annotations

import keyword
import logging
import re
import shutil
import sys
import warnings
from importlib import metadata
from importlib.resources import files
from pathlib import Path

from mlops_template import vcs
from mlops_template.errors import ProjectError, VcsError
from mlops_template.scaffold.answers import read_answers, template_digest, write_answers
from mlops_template.scaffold.lock import lock_project, uv_version
from mlops_template.scaffold.wheel import write_wheel

logger = logging.getLogger(__name__)

# Pinned in a project's Dockerfile and CI where no uv is installed to lock it now.
_DEFAULT_UV_VERSION = "0.9.5"

_NAME = re.compile(r"[a-z][a-z0-9]*(?:[-_][a-z0-9]+)*")
# Packages a project would shadow, breaking its own imports.
_TAKEN = {"mlops_template", "mlflow", "pandas", "numpy", "sklearn", "scipy", "matplotlib", "pytest", "test", "tests"}


# The rendered pipeline's steps, in order (src/<package>/main.py of the template).
TEMPLATE_STEPS = ("make_data", "feat_data", "train_model", "predict")


def template_path() -> Path:
    """The copier template shipped inside this package."""
    return Path(str(files("mlops_template.scaffold") / "template"))


def validate_project_name(name: str) -> str:
    if not _NAME.fullmatch(name):
        raise ProjectError(
            f"project name '{name}' is invalid; use lower-case letters, digits and single '-' or '_' "
            "between them, starting with a letter (e.g. churn or iris-classifier)"
        )
    return name


def validate_package_name(package: str) -> str:
    if not package.isidentifier() or keyword.iskeyword(package) or not package.islower():
        raise ProjectError(
            f"package name '{package}' is not a lower-case Python identifier; use letters, digits and '_' (e.g. churn_model)"
        )
    if package in _TAKEN or package in sys.stdlib_module_names or _installed(package):
        raise ProjectError(f"package name '{package}' would shadow an existing module; choose another with --package")
    return package


def _installed(package: str) -> bool:
    """Whether an installed distribution provides that top-level module (click, rich, yaml, …).

    The project's `src/<package>` would hide it from `mlops` and the project alike.
    """
    return package in metadata.packages_distributions()


def new_project(
    name: str, *, directory: str | Path | None = None, package: str | None = None, lock: bool = True
) -> Path:
    """Render a new project and return its folder.

    The folder must not exist or be empty. This library's wheel goes to `vendor/`, so the project
    installs without a package index having it, and `uv.lock` pins every package (unless `lock` is
    false); where the lock cannot be made (no registry, no uv) a warning names the command that
    makes it later. Copier's answers file records the library version and the template's digest
    (no path of this machine), so `mlops upgrade` can bring template changes in later.
    """
    validate_project_name(name)
    package = validate_package_name(package or name.replace("-", "_"))
    target = Path(directory or name).resolve()
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise ProjectError(f"{target} already exists and is not empty; choose a new folder with --directory")

    from copier import run_copy
    from copier.errors import CleanupWarning, CopierError

    data = {"project_name": name, "package_name": package, **version_answers(_version())}
    existed = target.exists()
    try:
        # A folder that cannot be written fails here as one line; a bug in the template keeps its traceback.
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", CleanupWarning)  # cleaning up is ours, below
                run_copy(str(template_path()), target, data=data, defaults=True, quiet=True, unsafe=False)
            write_answers(target, read_answers(target), digest=template_digest(template_path()))
            write_wheel(target / "vendor")
            _write_dag(target)
        except OSError as exc:
            raise ProjectError(
                f"cannot write the project into {target} ({exc}); choose a folder you can write with --directory"
            ) from exc
        except CopierError as exc:
            raise ProjectError(f"rendering the template into {target} failed ({exc})") from exc
        if lock:
            outcome = lock_project(target)
            if not outcome.locked:
                logger.warning("%s", outcome.message(target))
        _git_init(target)
    except BaseException:  # Ctrl+C included: a failed `new` leaves nothing behind
        _remove_partial(target, keep_folder=existed)
        raise
    return target


def _write_dag(target: Path) -> None:
    """The project's Airflow DAG, as `mlops dag` writes it, so the first commit has it."""
    from mlops_template.config.load import load_config
    from mlops_template.scheduler.airflow import write_dag

    write_dag(load_config(target), list(TEMPLATE_STEPS))


def version_answers(mlops_version: str) -> dict[str, str]:
    """The versions a render pins: this library's (or `mlops_version`), the uv that locks, the MLflow it runs."""
    return {
        "mlops_version": mlops_version,
        "uv_version": uv_version() or _DEFAULT_UV_VERSION,
        "mlflow_version": _mlflow_version(),
    }


def _remove_partial(target: Path, *, keep_folder: bool) -> None:
    if not keep_folder:
        shutil.rmtree(target, ignore_errors=True)
        return
    for child in target.iterdir():
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child, ignore_errors=True)
        else:
            child.unlink(missing_ok=True)


def _version() -> str:
    try:
        return metadata.version("mlops-template")
    except metadata.PackageNotFoundError:
        return "0.1.0"


def _mlflow_version() -> str:
    try:
        return metadata.version("mlflow")
    except metadata.PackageNotFoundError:
        return "3.1.0"


def _git_init(target: Path) -> None:
    """Start the project's history with the rendered files as its first commit."""
    # A neutral identity where the user has none configured.
    identity = {"user.name": "mlops", "user.email": "mlops@localhost"}
    try:
        vcs.init_commit(target, "Start project from mlops-template", identity=identity)
    except VcsError as exc:
        if exc.missing:
            return  # no git on this machine: the project works without history
        raise ProjectError(f"git could not record the new project in {target}: {exc.reason or exc}") from exc
