"""What a command line prints besides its results: an error as one red line, warnings in yellow, steps' log lines.

Shared by the `mlops` command and a project's own `python -m <package>.main`,
so both report the same way.
"""

from __future__ import annotations

import sys

from mlops_template.errors import MlopsError

# The library's warnings (e.g. a run's code version not recorded) go through this logger.
LIBRARY_LOGGER = "mlops_template"


def console(stderr: bool = False):
    """A rich console; piped output keeps whole lines (full run ids) instead of wrapping at 80 columns."""
    import shutil

    from rich.console import Console

    width = None if sys.stdout.isatty() else max(shutil.get_terminal_size((240, 24)).columns, 240)
    return Console(stderr=stderr, highlight=False, soft_wrap=True, width=width)


def fail(exc: MlopsError, *, verbose: bool, code: int = 1) -> None:
    """Print the error as one red line (its traceback first with `verbose`) and exit with `code`.

    Both go through :func:`uris.redact_text`: a third-party error in the chain may quote a store URI whole.
    """
    from mlops_template.redact import redact_text

    if verbose:
        import traceback

        sys.stderr.write(redact_text("".join(traceback.format_exception(exc))))
    from rich.markup import escape

    console(stderr=True).print(f"[bold red]Error:[/] {escape(redact_text(str(exc)))}", markup=True)
    sys.exit(code)


def show_warnings() -> None:
    """Print the library's warnings as yellow lines on stderr (once per process, however often called)."""
    import logging

    class YellowWarnings(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            from rich.markup import escape

            console(stderr=True).print(f"[yellow]Warning: {escape(record.getMessage())}[/]", markup=True)

    logger = logging.getLogger(LIBRARY_LOGGER)
    if not any(type(h).__name__ == "YellowWarnings" for h in logger.handlers):
        logger.addHandler(YellowWarnings(level=logging.WARNING))


def show_step_logs(package: str) -> None:
    """Print what steps log through `ctx.log` (the project package's loggers) at INFO and above."""
    import logging

    class CurrentStderr(logging.StreamHandler):
        """Writes to whatever `sys.stderr` is at the time, so repeated runs in one process all show."""

        stream = property(lambda self: sys.stderr, lambda self, value: None)

    logger = logging.getLogger(package)
    if not any(isinstance(h, logging.StreamHandler) for h in logger.handlers):
        handler = CurrentStderr()
        handler.setFormatter(logging.Formatter("    %(name)s: %(message)s"))
        logger.addHandler(handler)
    if logger.level == logging.NOTSET:
        logger.setLevel(logging.INFO)
