"""`python -m mlops_template` is the `mlops` command."""

from mlops_template.cli.main import entry

entry()
