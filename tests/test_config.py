"""`mlops.toml`: what a valid file gives, how overrides apply, and what each mistake says."""

from __future__ import annotations

import re

import pytest
from conftest import MINIMAL_CONFIG, PROJECT_CONFIG

from mlops_template.config.load import (
    Config,
    Environment,
    Gate,
    Resources,
    find_root,
    load_config,
)
from mlops_template.errors import ConfigError

FULL_CONFIG = """\
[project]
name = "iris-classifier"
package = "iris_classifier"

[environments.local]
storage = "data"
tracking_uri = "sqlite:///mlruns.db"

[environments.dev]
storage = "s3://acme-ml-dev/iris-classifier"
tracking_uri = "http://mlflow.dev.internal:5000"
registry_uri = "http://mlflow.dev.internal:5001"
aws_profile = "ml-dev"
aws_region = "eu-west-1"
s3_endpoint_url = "http://127.0.0.1:9000"
dask_scheduler = "tcp://dask:8786"

[params]
target = "species"
seed = 42

[steps.train_model.params]
max_depth = 5
seed = 7

[steps.train_model.resources]
cpu = "3"
memory = "10Gi"
gpu = 1
node_selector = { "node.kubernetes.io/instance-type" = "c5.2xlarge" }

[steps.predict.params]
batch_size = 1000

[model]
name = "iris-model"
gate = { metric = "accuracy", min = 1, beat_champion = false }
"""

_OVERRIDE_VARIABLES = (
    "MLOPS_ENVIRONMENT",
    "MLOPS_STORAGE",
    "MLFLOW_TRACKING_URI",
    "MLFLOW_REGISTRY_URI",
    "AWS_PROFILE",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_S3",
)


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch):
    """Variables that override config must come only from the test that sets them."""
    for name in _OVERRIDE_VARIABLES:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def config(write_config) -> Config:
    return load_config(write_config(FULL_CONFIG))


def config_error(write_config, text: str) -> str:
    """Load `text` as mlops.toml and return the ConfigError message it must raise."""
    root = write_config(text)
    with pytest.raises(ConfigError) as info:
        load_config(root)
    message = str(info.value)
    assert message.startswith(f"{root / 'mlops.toml'}: "), message  # every message names the file
    return message


# -- a valid file -------------------------------------------------------------------


def test_valid_config_parses_project_and_environments(config, tmp_path):
    assert config.root == tmp_path
    assert config.path == tmp_path / "mlops.toml"
    assert (config.name, config.package, config.default_environment) == ("iris-classifier", "iris_classifier", "local")
    assert set(config.environments) == {"local", "dev"}
    assert config.environments["dev"] == Environment(
        name="dev",
        storage="s3://acme-ml-dev/iris-classifier",
        tracking_uri="http://mlflow.dev.internal:5000",
        registry_uri="http://mlflow.dev.internal:5001",
        aws_profile="ml-dev",
        aws_region="eu-west-1",
        s3_endpoint_url="http://127.0.0.1:9000",
        dask_scheduler="tcp://dask:8786",
    )
    assert config.environments["dev"].is_remote_storage
    assert not config.environments["local"].is_remote_storage


def test_valid_config_parses_params_steps_and_resources(config):
    assert config.params == {"target": "species", "seed": 42}
    train = config.step("train_model")
    assert train.params == {"max_depth": 5, "seed": 7}
    assert train.resources == Resources(
        cpu="3", memory="10Gi", gpu=1, node_selector={"node.kubernetes.io/instance-type": "c5.2xlarge"}
    )
    assert config.step("predict").resources == Resources()
    assert config.step("not_configured").params == {}


def test_model_gate_values_and_int_min_becomes_float(config):
    assert config.model.name == "iris-model"
    assert config.model.gate == Gate(metric="accuracy", min=1.0, beat_champion=False)
    assert isinstance(config.model.gate.min, float)


def test_model_defaults_to_project_name_and_default_gate(write_config):
    config = load_config(write_config())  # gate = { min = false }: no floor
    assert config.model.name == "demo"
    assert config.model.gate == Gate(metric="f1", min=None, beat_champion=True)
    assert config.model.task == "classification"
    assert config.params == {} and config.steps == {}


def test_regression_task_defaults_the_gate_metric_to_r2(write_config):
    config = load_config(write_config(PROJECT_CONFIG + '[model]\ntask = "regression"\ngate = { min = 0.5 }\n'))
    assert (config.model.task, config.model.gate) == ("regression", Gate(metric="r2", min=0.5))


@pytest.mark.parametrize(
    ("model", "message"),
    [
        (
            'task = "clustering"\ngate = { min = 0.5 }',
            "[model] task 'clustering' is unknown; valid: classification, regression",
        ),
        (
            'task = "regression"\ngate = { metric = "f1" }',
            '[model.gate] metric \'f1\' is a classification metric but task = "regression"; use e.g. "r2"',
        ),
        (
            'gate = { metric = "neg_root_mean_squared_error" }',
            '[model.gate] metric \'neg_root_mean_squared_error\' is a regression metric but task = "classification"; use e.g. "f1"',
        ),
        ('gate = { metric = "rand_score" }', "'rand_score' scores a clustering, not a classification model"),
        (
            'gate = { metric = "rmse", higher_is_better = false }',
            "[model.gate] remove 'higher_is_better': the metric's name gives its direction (rmse, mae, mse: lower",
        ),
    ],
)
def test_gate_metric_must_fit_the_task(write_config, model, message):
    with pytest.raises(ConfigError) as err:
        load_config(write_config(PROJECT_CONFIG + "[model]\n" + model + "\n"))
    assert message in str(err.value)


def test_step_params_lays_step_params_over_shared_params(config):
    assert config.step_params("train_model") == {"target": "species", "seed": 7, "max_depth": 5}
    assert config.step_params("predict") == {"target": "species", "seed": 42, "batch_size": 1000}
    assert config.step_params("make_data") == {"target": "species", "seed": 42}
    assert config.params == {"target": "species", "seed": 42}  # merging does not change the shared params


# -- paths ------------------------------------------------------------------------


def test_relative_storage_and_sqlite_paths_become_absolute(config, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path.parent)  # the cwd must not matter
    local = config.environment("local")
    assert local.storage == str(tmp_path / "data")
    assert local.tracking_uri == f"sqlite:///{tmp_path / 'mlruns.db'}"


def test_absolute_paths_and_remote_uris_are_kept(write_config, tmp_path):
    text = f"""\
[project]
name = "demo"
package = "demo"

[model]
gate = {{ min = false }}

[environments.local]
storage = "{tmp_path / "elsewhere"}"
tracking_uri = "sqlite:////var/mlflow/runs.db"
registry_uri = "sqlite:///registry.db"

[environments.dev]
storage = "s3://bucket/prefix"
tracking_uri = "http://mlflow:5000"
"""
    config = load_config(write_config(text, root=tmp_path / "project"))
    local = config.environment("local")
    assert local.storage == str(tmp_path / "elsewhere")
    assert local.tracking_uri == "sqlite:////var/mlflow/runs.db"
    assert local.registry_uri == f"sqlite:///{tmp_path / 'project' / 'registry.db'}"
    dev = config.environment("dev")
    assert (dev.storage, dev.tracking_uri) == ("s3://bucket/prefix", "http://mlflow:5000")


def test_load_config_finds_the_file_in_a_parent_folder(write_config, tmp_path, monkeypatch):
    root = write_config()
    nested = root / "src" / "demo"
    nested.mkdir(parents=True)
    assert load_config(nested).root == root
    monkeypatch.chdir(nested)
    assert load_config().root == root
    assert find_root() == root


def test_no_mlops_toml_found_says_where_it_looked(tmp_path):
    with pytest.raises(ConfigError, match=r"no mlops\.toml in .* or any parent folder") as info:
        find_root(tmp_path)
    assert str(tmp_path) in str(info.value)
    assert "mlops new" in str(info.value)
    with pytest.raises(ConfigError, match=r"no mlops\.toml"):
        load_config(tmp_path)


# -- choosing an environment and overriding it -----------------------------------------


def test_environment_chosen_by_argument_then_variable_then_default(config, monkeypatch):
    assert config.environment().name == "local"
    monkeypatch.setenv("MLOPS_ENVIRONMENT", "dev")
    assert config.environment().name == "dev"
    assert config.environment("local").name == "local"  # an argument beats the variable


def test_default_environment_from_project(write_config):
    text = FULL_CONFIG.replace(
        'package = "iris_classifier"', 'package = "iris_classifier"\ndefault_environment = "dev"'
    )
    config = load_config(write_config(text))
    assert config.default_environment == "dev"
    assert config.environment().name == "dev"


def test_unknown_environment_lists_the_valid_ones(config, monkeypatch):
    with pytest.raises(ConfigError, match=r"unknown environment 'prod'; valid: dev, local") as info:
        config.environment("prod")
    assert str(config.path) in str(info.value)
    assert "[environments.prod]" in str(info.value)
    monkeypatch.setenv("MLOPS_ENVIRONMENT", "lokal")
    with pytest.raises(ConfigError, match=r"unknown environment 'lokal'; did you mean 'local'\?"):
        config.environment()


def test_undefined_default_environment_is_an_error(write_config):
    text = FULL_CONFIG.replace(
        'package = "iris_classifier"', 'package = "iris_classifier"\ndefault_environment = "prod"'
    )
    message = config_error(write_config, text)
    assert "default_environment 'prod' is not defined" in message
    assert "dev, local" in message


def test_variables_override_the_environment(config, monkeypatch, tmp_path):
    monkeypatch.setenv("MLOPS_STORAGE", "s3://other-bucket/x")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://tracking:5000")
    monkeypatch.setenv("AWS_PROFILE", "ml-prod")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-west-2")
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "http://127.0.0.1:9999")
    env = config.environment("dev")
    assert env.storage == "s3://other-bucket/x"
    assert env.tracking_uri == "http://tracking:5000"
    assert env.aws_profile == "ml-prod"
    assert env.aws_region == "us-west-2"
    assert env.s3_endpoint_url == "http://127.0.0.1:9999"
    assert env.registry_uri == "http://mlflow.dev.internal:5001"  # not overridden: kept
    assert config.environments["dev"].aws_profile == "ml-dev"  # the parsed config is untouched


def test_relative_storage_override_is_relative_to_the_cwd(config, tmp_path, monkeypatch):
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.setenv("MLOPS_STORAGE", "scratch")
    assert config.environment("local").storage == str(work / "scratch")


def test_relative_sqlite_override_is_relative_to_the_cwd(config, tmp_path, monkeypatch):
    # A relative SQLite path would otherwise follow whatever cwd MLflow later runs in.
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///runs.db")
    monkeypatch.setenv("MLFLOW_REGISTRY_URI", "sqlite:///registry.db")
    env = config.environment("local")
    assert env.tracking_uri == f"sqlite:///{work / 'runs.db'}"
    assert env.registry_uri == f"sqlite:///{work / 'registry.db'}"
    assert env.storage == str(tmp_path / "data")  # not overridden: still the project's folder


# -- mistakes -------------------------------------------------------------------------


def test_unknown_top_level_key_names_key_choices_and_near_miss(write_config):
    message = config_error(write_config, "[projct]\nname = 'x'\n")
    assert "unknown key 'projct'" in message
    assert "did you mean 'project'?" in message
    assert "environments, model, params, project, run, steps" in message


def test_unknown_top_level_key_without_near_miss_lists_choices(write_config):
    message = config_error(write_config, "zzz = 1\n" + FULL_CONFIG)
    assert "unknown key 'zzz'" in message
    assert "did you mean" not in message
    assert "valid: dag, data, environments, model, params, project, run, steps" in message


def test_unknown_key_in_an_environment(write_config):
    message = config_error(write_config, FULL_CONFIG.replace("aws_profile =", "aws_profil ="))
    assert "unknown key 'aws_profil' in [environments.dev]" in message
    assert "did you mean 'aws_profile'?" in message
    assert "s3_endpoint_url" in message


def test_unknown_key_in_a_step_suggests_params(write_config):
    text = FULL_CONFIG.replace("[steps.train_model.params]", "[steps.train_model.param]")
    message = config_error(write_config, text)
    assert "unknown key 'param' in [steps.train_model]" in message
    assert "did you mean 'params'?" in message


def test_unknown_key_in_the_gate(write_config):
    message = config_error(write_config, FULL_CONFIG.replace("min = 1", "minimum = 1"))
    assert "unknown key 'minimum' in [model.gate]" in message
    assert "metric" in message and "beat_champion" in message


@pytest.mark.parametrize(
    ("extra", "place", "hint"),
    [
        ("\n[dag]\nretires = 3\n", "unknown key 'retires' in [dag]", "did you mean 'retries'? Valid: "),
        (
            '\n[steps.predict.resources]\nmemroy = "1Gi"\n',
            "unknown key 'memroy' in [steps.predict.resources]",
            "did you mean 'memory'?",
        ),
        (
            '\n[steps.predict.resources]\ntolerations = [{ key = "gpu", efect = "NoSchedule" }]\n',
            "unknown key 'efect' in [steps.predict.resources.tolerations[0]]",
            "did you mean 'effect'?",
        ),
    ],
)
def test_unknown_keys_in_dag_and_resources_read_like_every_other_table(write_config, extra, place, hint):
    message = config_error(write_config, FULL_CONFIG + extra)
    assert f"{place}; {hint}" in message


def test_a_cpu_count_may_be_a_number(write_config):
    assert 'cpu = "3"' in FULL_CONFIG
    config = load_config(write_config(FULL_CONFIG.replace('cpu = "3"', "cpu = 0.5")))
    assert config.step("train_model").resources.cpu == "0.5"


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ("min = 1", 'min = "high"', "[model.gate] min must be a number or false, got str 'high'"),
        ("min = 1", "min = true", "[model.gate] min must be a number or false, got bool True"),
        (
            "beat_champion = false",
            'beat_champion = "no"',
            "[model.gate] beat_champion must be true or false, got str 'no'",
        ),
        ('cpu = "3"', "cpu = true", "[steps.train_model.resources] cpu must be a Kubernetes quantity"),
        ("gpu = 1", "gpu = true", "[steps.train_model.resources] gpu must be a whole number of GPUs"),
        ('aws_region = "eu-west-1"', "aws_region = 1", "[environments.dev] aws_region must be a string, got int 1"),
        ('name = "iris-model"', "name = 3", "[model] name must be a string, got int 3"),
    ],
)
def test_wrong_type_names_key_and_expected_type(write_config, old, new, expected):
    assert old in FULL_CONFIG
    message = config_error(write_config, FULL_CONFIG.replace(old, new))
    assert expected in message


def test_step_params_accept_any_type(write_config):
    text = FULL_CONFIG.replace("max_depth = 5", 'max_depth = 5\ncriterion = "gini"\nweights = [0.5, 0.5]')
    config = load_config(write_config(text))
    assert config.step("train_model").params["weights"] == [0.5, 0.5]


def test_missing_project_name(write_config):
    message = config_error(write_config, FULL_CONFIG.replace('name = "iris-classifier"\n', ""))
    assert "[project] needs 'name'" in message


def test_missing_project_table(write_config):
    text = FULL_CONFIG.replace('[project]\nname = "iris-classifier"\npackage = "iris_classifier"\n', "")
    message = config_error(write_config, text)
    assert "missing [project]" in message


def test_missing_storage_in_an_environment(write_config):
    message = config_error(write_config, FULL_CONFIG.replace('storage = "data"\n', ""))
    assert "[environments.local] needs 'storage'" in message


def test_empty_environments(write_config):
    message = config_error(write_config, '[project]\nname = "x"\npackage = "x"\n[environments]\n')
    assert "[environments] is empty" in message


def test_table_expected_but_value_given(write_config):
    message = config_error(
        write_config, "params = 3\n" + FULL_CONFIG.replace('[params]\ntarget = "species"\nseed = 42\n', "")
    )
    assert "'params' must be a table ([params]), not int" in message


@pytest.mark.parametrize("package", ["iris-classifier", "1iris", "iris classifier"])
def test_package_must_be_an_identifier(write_config, package):
    message = config_error(write_config, FULL_CONFIG.replace('package = "iris_classifier"', f'package = "{package}"'))
    assert f"[project] package '{package}' is not a Python identifier" in message


def test_invalid_toml_syntax_names_the_file_and_line(write_config):
    message = config_error(write_config, FULL_CONFIG.replace("max_depth = 5", "max_depth = "))
    assert "not valid TOML" in message
    assert re.search(r"line \d+", message), message


def test_on_champion_error_is_refuse_by_default_and_min_when_set(write_config):
    assert load_config(
        write_config(PROJECT_CONFIG + "[model]\ngate = { min = 0.5 }\n")
    ).model.gate.on_champion_error == ("refuse")
    lenient = PROJECT_CONFIG + '[model]\ngate = { min = 0.5, on_champion_error = "min" }\n'
    assert load_config(write_config(lenient)).model.gate.on_champion_error == "min"
    message = config_error(write_config, PROJECT_CONFIG + '[model]\ngate = { min = 0.5, on_champion_error = "pass" }\n')
    assert "[model.gate] on_champion_error 'pass' is unknown; valid: min, refuse" in message


def test_min_is_required_and_false_says_no_floor(write_config):
    message = config_error(write_config, PROJECT_CONFIG + "[model]\ngate = { beat_champion = true }\n")
    assert "[model] gate needs 'min'" in message and "`min = false`" in message
    assert "[model] gate needs 'min'" in config_error(write_config, PROJECT_CONFIG)  # no [model] at all
    assert load_config(write_config(PROJECT_CONFIG + "[model]\ngate = { min = false }\n")).model.gate.min is None
    wrong = config_error(write_config, PROJECT_CONFIG + "[model]\ngate = { min = true }\n")
    assert "[model.gate] min must be a number or false, got bool True" in wrong


def test_an_environment_overrides_model_keys_but_not_name_or_task(write_config):
    text = (
        MINIMAL_CONFIG.replace("gate = { min = false }", 'gate = { min = 0.7, metric = "f1" }\ntrusted_types = ["a.B"]')
        + '\n[environments.prod]\nstorage = "prod"\ntracking_uri = "sqlite:///prod.db"\n'
        + '\n[environments.prod.model]\nallow_pickle = true\ntrusted_types = ["mypkg."]\ngate = { min = 0.9 }\n'
    )
    config = load_config(write_config(text))
    local, prod = config.model_in("local"), config.model_in("prod")
    assert (local.allow_pickle, local.trusted_types, local.gate.min) == (False, ("a.B",), 0.7)
    assert (prod.allow_pickle, prod.trusted_types, prod.gate) == (True, ("mypkg.",), Gate(metric="f1", min=0.9))
    renamed = text + 'name = "other"\n'
    assert "unknown key 'name' in [environments.prod.model]" in config_error(write_config, renamed)
    bad = text.replace('["mypkg."]', '["os.system()"]')
    assert "[environments.prod.model] trusted_types holds 'os.system()'" in config_error(write_config, bad)
