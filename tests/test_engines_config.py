"""Choosing the engine: `[data] engine` per project and environment, the variables that override it, and `auto`."""

from __future__ import annotations

import os

import pytest

from mlops_template.config.load import load_config
from mlops_template.data import engines
from mlops_template.errors import ConfigError, DataError

CONFIG = """\
[project]
name = "engines"
package = "engines"

[model]
gate = {{ min = false }}

[environments.local]
storage = "data"
tracking_uri = "sqlite:///mlruns.db"

[environments.dev]
storage = "s3://acme/engines"
tracking_uri = "http://mlflow.dev.internal:5000"
dask_scheduler = "tcp://dask.dev.internal:8786"

[environments.dev.data]
engine = "dask"
{data}
"""


@pytest.fixture(autouse=True)
def _no_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("MLOPS_ENGINE", "MLOPS_DASK_SCHEDULER", "MLOPS_ENVIRONMENT"):
        monkeypatch.delenv(name, raising=False)


def test_engine_defaults_to_auto_and_an_environment_overrides_the_project(write_config):
    config = load_config(write_config(CONFIG.format(data="")))
    assert config.environment("local").engine == "auto"
    assert config.environment("dev").engine == "dask"
    config = load_config(write_config(CONFIG.format(data='[data]\nengine = "pandas"\n')))
    assert config.environment("local").engine == "pandas"
    assert config.environment("dev").engine == "dask"


def test_an_unknown_engine_names_the_file_the_table_and_the_choices(write_config):
    root = write_config(CONFIG.format(data='[data]\nengine = "dusk"\n'))
    with pytest.raises(ConfigError) as info:
        load_config(root)
    message = str(info.value)
    assert message.startswith(f"{root / 'mlops.toml'}: [data] engine 'dusk' is unknown")
    assert "did you mean 'dask'?" in message and "\n" not in message


def test_an_unknown_key_in_the_data_table_is_refused(write_config):
    with pytest.raises(ConfigError, match=r"unknown key 'engin' in \[data\]; did you mean 'engine'\?"):
        load_config(write_config(CONFIG.format(data='[data]\nengin = "dask"\n')))


def test_variables_override_the_engine_and_the_scheduler(write_config, monkeypatch: pytest.MonkeyPatch):
    config = load_config(write_config(CONFIG.format(data="")))
    monkeypatch.setenv("MLOPS_ENGINE", "pandas")
    monkeypatch.setenv("MLOPS_DASK_SCHEDULER", "tcp://10.0.0.5:8786")
    dev = config.environment("dev")
    assert (dev.engine, dev.dask_scheduler) == ("pandas", "tcp://10.0.0.5:8786")
    monkeypatch.setenv("MLOPS_ENGINE", "spark")
    with pytest.raises(ConfigError, match="MLOPS_ENGINE 'spark' is unknown; valid: auto, dask, pandas"):
        config.environment("dev")


def test_auto_picks_dask_when_the_raw_data_is_over_a_tenth_of_the_memory(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(engines, "memory_available", lambda: 1000)
    assert engines.resolve_engine("auto", 100) == "pandas"
    assert engines.resolve_engine("auto", 101) == "dask"
    assert engines.resolve_engine("pandas", 10**9) == "pandas"
    assert engines.resolve_engine("dask", 0) == "dask"
    with pytest.raises(DataError, match="engine 'spark' is unknown"):
        engines.resolve_engine("spark", 0)


def test_the_machine_is_sized_from_its_limits():
    memory, cpus = engines.memory_available(), engines.cpus_available()
    physical = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    assert 0 < memory <= physical
    assert 1 <= cpus <= (os.cpu_count() or 1)
