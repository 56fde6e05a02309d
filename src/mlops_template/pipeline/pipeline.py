"""A pipeline: an ordered list of validated steps, each a function of one StepContext."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlops_template.errors import StepError, choices

if TYPE_CHECKING:
    from mlops_template.pipeline.context import StepContext
    from mlops_template.pipeline.runner import OnStep, PipelineResult


@dataclass(frozen=True)
class Step:
    """A named function of one `StepContext`; the name is the function's unless given."""

    name: str
    func: Callable[[StepContext], Any]

    @classmethod
    def of(cls, item: Step | Callable[[StepContext], Any]) -> Step:
        if isinstance(item, Step):
            return item
        if not callable(item):
            raise StepError(f"pipeline step {item!r} is not callable; pass functions of one StepContext")
        name = getattr(item, "__name__", None)
        if not isinstance(name, str) or not name:
            raise StepError(
                f"pipeline step {item!r} has no __name__ (a partial or callable object); "
                "name it with Step(name='...', func=...)"
            )
        _validate_signature(item)
        return cls(name=name, func=item)

    def __call__(self, ctx: StepContext) -> Any:
        return self.func(ctx)

    def __repr__(self) -> str:
        return f"{self.name}(ctx)"


class Pipeline:
    """Steps in the order they run. Rejects duplicate names before anything runs."""

    def __init__(self, steps: Iterable[Step | Callable[[StepContext], Any]]) -> None:
        self.steps = [Step.of(s) for s in steps]
        if not self.steps:
            raise StepError("a pipeline needs at least one step")
        seen: set[str] = set()
        for step in self.steps:
            if step.name in seen:
                raise StepError(f"pipeline has two steps named '{step.name}'; rename one of the functions")
            seen.add(step.name)

    @property
    def names(self) -> list[str]:
        return [s.name for s in self.steps]

    def __repr__(self) -> str:
        return f"Pipeline([{' -> '.join(self.names)}])"

    def select(self, names: Sequence[str] | None = None) -> list[Step]:
        """The named steps in pipeline order (all when `names` is empty); unknown names are errors."""
        if isinstance(names, str):  # select("train_model") means one step, not its letters
            names = [names]
        if not names:
            return list(self.steps)
        for name in names:
            if name not in self.names:
                raise StepError(f"unknown step '{name}'; {choices(self.names, name)}")
        return [s for s in self.steps if s.name in set(names)]

    def run(
        self,
        *,
        steps: Sequence[str] | None = None,
        environment: str | None = None,
        params: dict[str, Any] | None = None,
        project: str | Path | None = None,
        on_step: OnStep | None = None,
        pipeline_run: str | None = None,
        plan: Sequence[str] | None = None,
    ) -> PipelineResult:
        """Run as one tracked pipeline run (joining `pipeline_run`'s, if given), with the project's `mlops.toml`."""
        from mlops_template.config.load import load_config
        from mlops_template.pipeline.runner import run_pipeline

        return run_pipeline(
            self,
            load_config(project),
            steps=steps,
            environment=environment,
            overrides=params,
            on_step=on_step,
            pipeline_run=pipeline_run,
            plan=plan,
        )

    def main(self, argv: Sequence[str] | None = None) -> None:
        """Command line of a project's `main` module: `python -m <package>.main --step X`."""
        from mlops_template.cli.run import run_command

        run_command(self, argv)


def _validate_signature(func: Callable[..., Any]) -> None:
    try:
        params = inspect.signature(func).parameters
    except (TypeError, ValueError):
        return
    required = [p for p in params.values() if p.default is p.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    # The runner passes the context positionally and nothing else, so a required keyword-only one cannot be met.
    if len(required) != 1 or required[0].kind is required[0].KEYWORD_ONLY:
        raise StepError(
            f"step '{getattr(func, '__name__', func)}' must take exactly one argument (the StepContext, by position), "
            f"it takes {len(required)}" + (f" ({', '.join(p.name for p in required)})" if required else "")
        )
