"""`python -m mlops_template` is the `mlops` command."""

from .cli import entry

entry()
