"""Step caching: a step whose code, settings and inputs did not change is not run again; its outputs are reused.

A step's key (tag `mlops.cache_key`) is BLAKE3 over what is known before it
runs: the source bytes of its module and of every project module that module
imports, transitively (comments count: they are bytes of the file), the
project's `schemas.py`, its resolved params, the environment and its `[data]`
settings, and the locked package set (`uv.lock`, or the installed
distributions where there is no lock).

What a step reads is known only once it ran, so each attempt records it (tag
`mlops.cache_reads`): the snapshot ids of the datasets it read, a digest of the
raw files it read, each query's file and `cache_key`, and the champion version
it loaded or left behind. An earlier FINISHED attempt with the same key is a
hit when every one of those reads resolves, in the new pipeline run, to what it
was then, and every snapshot it wrote is still stored. A query without a
`cache_key` reads a live source: its step is never a hit.

A step the key cannot see whole is never cached: a function defined outside the
project's package (a notebook, a test), or one that closes over outside values.
"""

from __future__ import annotations

import ast
import json
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlops_template.data import predictions
from mlops_template.tracking.tags import (
    TAG_CACHE_KEY,
    TAG_CACHE_READS,
    TAG_CACHED_FROM,
    TAG_DATA_PREFIX,
    TAG_GATE,
    TAG_GATE_REASON,
    TAG_HELDOUT_DATA,
    TAG_MODEL_VERSION,
    TAG_OUTPUT_PREFIX,
    TAG_OUTPUT_URI_PREFIX,
    TAG_PARENT,
    TAG_SQL_PREFIX,
    TAG_TRAINING_DATA,
)

if TYPE_CHECKING:
    from mlflow.entities import Run

    from mlops_template.config.load import Config, Environment, ModelConfig
    from mlops_template.data.snapshots import SnapshotStore
    from mlops_template.pipeline.coordination import RunScope
    from mlops_template.pipeline.pipeline import Step

CANDIDATES = 20  # earlier attempts with the key looked at, newest first
_FORMAT = 1  # bumped when what goes into a key changes, so no older key matches
_REUSED_PREFIXES = (TAG_OUTPUT_PREFIX, TAG_OUTPUT_URI_PREFIX, TAG_DATA_PREFIX, TAG_SQL_PREFIX)
_REUSED = (TAG_TRAINING_DATA, TAG_HELDOUT_DATA, TAG_GATE, TAG_GATE_REASON, TAG_MODEL_VERSION, TAG_CACHE_READS)


@dataclass
class Reads:
    """What one step attempt read from outside its code and params."""

    data: dict[str, str] = field(default_factory=dict)  # dataset name -> snapshot id, as this pipeline run had it
    raw: dict[str, str] = field(default_factory=dict)  # read_raw pattern -> digest of the files it matched
    sql: dict[str, str] = field(default_factory=dict)  # "<query file>#<cache_key>" -> the file's sha256
    model: str | None = None  # the champion version the step loaded, or that training left
    settings: str | None = None  # the `[model]` settings it was judged or loaded under (`model_settings`)
    live: bool = False  # a query without cache_key: the source may change under the same text
    judged: bool = False  # a model was put to the gate (the gate's settings count), not only loaded

    def tag(self) -> str:
        return json.dumps(asdict(self), sort_keys=True, separators=(",", ":"))

    @classmethod
    def parse(cls, text: str | None) -> Reads | None:
        if not text:
            return None
        try:
            return cls(**json.loads(text))
        except (ValueError, TypeError):
            return None


def model_settings(model: ModelConfig, *, judged: bool) -> str:
    """A digest of the `[model]` settings a step depends on: what may be loaded; with `judged`, the gate too."""
    from mlops_template.data.hashing import digest_bytes

    settings = {"name": model.name, "trusted_types": model.trusted_types, "allow_pickle": model.allow_pickle}
    if judged:
        settings |= {"task": model.task, "gate": asdict(model.gate)}
    return digest_bytes(json.dumps(settings, sort_keys=True).encode())


def cacheable(step: Step, package: str) -> str | None:
    """Why `step` cannot be cached (its code is not all in the project's files), or None when it can."""
    func = step.func
    module = getattr(func, "__module__", "") or ""
    if module != package and not module.startswith(package + "."):
        return f"its function is defined in {module or 'no module'}, outside the project's package {package}"
    if getattr(func, "__closure__", None):
        return "its function closes over values defined outside it"
    return None


def code_files(module: str, package: str, root: Path) -> list[Path]:
    """The source files of `module` and of every module of `package` it imports, transitively, with their packages."""
    root = _package_folder(package, root)
    if root is None:
        return []
    seen: set[str] = set()
    files: dict[str, Path] = {}
    todo = [module]
    while todo:
        name = todo.pop()
        if name in seen or not (name == package or name.startswith(package + ".")):
            continue
        seen.add(name)
        path = _module_file(root, package, name)
        if path is None:
            continue
        files[name] = path
        todo.extend(_parents(name, package))  # importing a.b.c runs a/__init__ and a/b/__init__ first
        todo.extend(_imports(path, name, is_package=path.name == "__init__.py"))
    return [files[name] for name in sorted(files)]


def step_key(step: Step, params: dict[str, Any], config: Config, env: Environment, packages: str) -> str:
    """The key of `step` before it runs: its code, the schemas, params, environment, data settings and packages."""
    from mlops_template.data.hashing import digest_bytes

    files = code_files(step.func.__module__, config.package, config.root)
    schemas = _package_folder(config.package, config.root)
    if schemas is not None and (schemas / "schemas.py").is_file():
        files = sorted({*files, schemas / "schemas.py"})
    body = {
        "format": _FORMAT,
        "step": step.name,
        "function": step.func.__qualname__,
        "code": {str(p.relative_to(config.root) if p.is_relative_to(config.root) else p): _digest(p) for p in files},
        "params": params,
        "environment": env.name,
        "data": {"engine": env.engine, "validation": env.validation},
        "packages": packages,
    }
    return digest_bytes(json.dumps(body, sort_keys=True, default=str).encode())


def packages_digest(root: Path, installed: str) -> str:
    """The locked package set: `uv.lock`'s digest, else `installed` (the provenance's hash of the distributions)."""
    lock = root / "uv.lock"
    return f"uv.lock:{_digest(lock)}" if lock.is_file() else f"installed:{installed}"


def find_hit(
    client: Any, experiment_id: str, key: str, unchanged: Callable[[Run, Reads], bool]
) -> tuple[Run, Reads] | None:
    """The newest FINISHED attempt with `key` whose reads are `unchanged`, with them; None when there is none."""
    runs = client.search_runs(
        [experiment_id],
        filter_string=f"tags.`{TAG_CACHE_KEY}` = '{key}' and attributes.status = 'FINISHED'",
        order_by=["attributes.start_time DESC"],
        max_results=CANDIDATES,
    )
    for run in runs:
        reads = Reads.parse(run.data.tags.get(TAG_CACHE_READS))
        if reads is not None and not reads.live and unchanged(run, reads):
            return run, reads
    return None


@dataclass
class View:
    """The new pipeline run, in which an earlier attempt's reads are resolved again."""

    scope: RunScope
    snapshots: SnapshotStore
    root: Path
    champion: Callable[[], str]  # the champion version now, "none" when there is none
    model: ModelConfig  # `[model]` as the environment has it now

    def unchanged(self, run: Run, reads: Reads) -> bool:
        """Whether `run`'s outputs are still stored and each of its reads would read the same bytes now."""
        from mlops_template.data import raw

        for name, snapshot_id in outputs(run).items():
            if not self.snapshots.has(name, snapshot_id):
                return False
        made = _predictions_of(run)
        if made is not None and predictions.stored_by(self.snapshots.storage, made) is None:
            return False
        for name, snapshot_id in reads.data.items():
            if self.dataset(name) != snapshot_id:
                return False
        for pattern, digest in reads.raw.items():
            if raw.files_digest(self.snapshots.storage, raw.raw_keys(self.snapshots.storage, pattern)) != digest:
                return False
        for relative, sha256 in reads.sql.items():
            path = self.root / relative.split("#", 1)[0]
            if not path.is_file() or _sha256(path) != sha256:
                return False
        if reads.settings is not None and reads.settings != model_settings(self.model, judged=reads.judged):
            return False
        return reads.model is None or self.champion() == reads.model

    def dataset(self, name: str) -> str | None:
        """The snapshot id a step of this pipeline run reads as `name`: an earlier step's output, the pinned
        version, else the current one."""
        from mlops_template.errors import StorageError

        found = self.scope.written(name) or self.scope.pinned(name)
        if found is not None:
            return found
        try:
            return self.snapshots.current(name).id
        except StorageError:
            return None

    def adopt(self, run: Run, pipeline_run_id: str) -> None:
        """Make the reused attempt's work this pipeline run's, as running it would have: its outputs become the
        current versions, what it read from outside the pipeline run is pinned to it, and this run's
        predictions point at those it stored."""
        made = _predictions_of(run)
        if made is not None:
            predictions.refer(self.snapshots.storage, pipeline_run_id, made)
        written = outputs(run)
        for name, snapshot_id in written.items():  # nothing is copied where the current version is that already
            self.snapshots.set_current(self.snapshots.resolve(f"{name}:{snapshot_id}"))
        for key, snapshot_id in run.data.tags.items():
            name = key.removeprefix(TAG_DATA_PREFIX)
            if key.startswith(TAG_DATA_PREFIX) and name not in written and self.scope.written(name) is None:
                self.scope.pin(name, snapshot_id, run.info.run_id)


def reused_tags(run: Run) -> dict[str, str]:
    """The tags of an attempt that describe its work, for the step run that reuses it."""
    tags = run.data.tags
    kept = {k: v for k, v in tags.items() if k.startswith(_REUSED_PREFIXES) or k in _REUSED}
    return kept | {TAG_CACHED_FROM: origin(run)}


def origin(run: Run) -> str:
    """The attempt that did the work: the run itself, or the one it was reused from."""
    return run.data.tags.get(TAG_CACHED_FROM) or run.info.run_id


def outputs(run: Run) -> dict[str, str]:
    """The snapshots an attempt wrote, by dataset name."""
    tags = run.data.tags
    return {k.removeprefix(TAG_OUTPUT_PREFIX): v for k, v in tags.items() if k.startswith(TAG_OUTPUT_PREFIX)}


def _predictions_of(run: Run) -> str | None:
    """The pipeline run whose predictions an attempt stored (its parent), None if it stored none."""
    if TAG_OUTPUT_URI_PREFIX + "predictions" not in run.data.tags:
        return None
    return run.data.tags.get(TAG_PARENT)


def _sha256(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def _digest(path: Path) -> str:
    from mlops_template.data.hashing import digest_file

    return digest_file(path)


def _package_folder(package: str, root: Path) -> Path | None:
    """The project's package folder: `src/<package>` of the project, else where the package was imported from."""
    if (root / "src" / package / "__init__.py").is_file():
        return root / "src" / package
    found = sys.modules.get(package)
    file = getattr(found, "__file__", None)
    return Path(file).parent if file else None


def _module_file(root: Path, package: str, name: str) -> Path | None:
    relative = Path(*name.split(".")[1:]) if name != package else Path()
    for path in (root / relative / "__init__.py", (root / relative).with_suffix(".py")):
        if name != package or path.name == "__init__.py":
            if path.is_file():
                return path
    return None


def _parents(name: str, package: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def _imports(path: Path, name: str, *, is_package: bool) -> list[str]:
    """Every module name an import in `path` may load: `a.b` for `import a.b`, `x` and `x.n` for `from x import n`."""
    try:
        tree = ast.parse(path.read_bytes(), filename=str(path))
    except SyntaxError:
        return []
    here = name if is_package else name.rpartition(".")[0]
    found: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base_parts = here.split(".")
                base_parts = base_parts[: len(base_parts) - (node.level - 1)] if node.level > 1 else base_parts
                base = ".".join([*base_parts, node.module] if node.module else base_parts)
            else:
                base = node.module or ""
            found.append(base)
            found.extend(f"{base}.{alias.name}" for alias in node.names if alias.name != "*")
    return found
