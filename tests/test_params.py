"""`-P key=value` overrides: typed values, step targeting, and errors for typos."""

from __future__ import annotations

import pytest

from mlops_template.config.params import apply_overrides, parse_overrides, parse_value
from mlops_template.errors import ConfigError

PARAMS = {
    "make_data": {"target": "species"},
    "train_model": {"target": "species", "max_depth": 5, "seed": 42},
    "predict": {"target": "species", "batch_size": 100},
}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("3", 3),
        ("-7", -7),
        ("0.25", 0.25),
        ("1e-3", 0.001),
        ("true", True),
        ("false", False),
        ('"quoted"', "quoted"),
        ("gini", "gini"),
        ("", ""),
        ("[1, 2]", [1, 2]),
        ("a b", "a b"),
    ],
)
def test_parse_value_reads_toml_types_else_keeps_the_string(text, expected):
    value = parse_value(text)
    assert value == expected
    assert type(value) is type(expected)


def test_parse_overrides_types_values_and_keeps_step_keys():
    overrides = parse_overrides(
        ["max_depth=3", "train_model.test_size=0.3", " shuffle = true ", "criterion=entropy", "expr=a=b"]
    )
    assert overrides == {
        "max_depth": 3,
        "train_model.test_size": 0.3,
        "shuffle": True,
        "criterion": "entropy",
        "expr": "a=b",  # only the first '=' separates key and value
    }
    assert type(overrides["max_depth"]) is int
    assert type(overrides["shuffle"]) is bool


def test_later_override_of_the_same_key_wins():
    assert parse_overrides(["seed=1", "seed=2"]) == {"seed": 2}


@pytest.mark.parametrize("item", ["max_depth", "=3", " =3", ""])
def test_malformed_item_is_an_error_showing_the_form(item):
    with pytest.raises(ConfigError, match=r"is not KEY=VALUE") as info:
        parse_overrides([item])
    assert f"param '{item}'" in str(info.value)
    assert "-P max_depth=3" in str(info.value)


def test_step_key_targets_only_that_step():
    result = apply_overrides(PARAMS, {"train_model.target": "label"})
    assert result["train_model"]["target"] == "label"
    assert result["make_data"]["target"] == "species"
    assert result["predict"]["target"] == "species"


def test_step_key_may_add_a_new_param_to_that_step():
    result = apply_overrides(PARAMS, {"predict.threshold": 0.7})
    assert result["predict"] == {"target": "species", "batch_size": 100, "threshold": 0.7}
    assert "threshold" not in result["train_model"]


def test_bare_key_applies_to_every_step_that_has_it():
    result = apply_overrides(PARAMS, parse_overrides(["target=label", "max_depth=3"]))
    assert {step: p["target"] for step, p in result.items()} == dict.fromkeys(PARAMS, "label")
    assert result["train_model"]["max_depth"] == 3
    assert "max_depth" not in result["make_data"] and "max_depth" not in result["predict"]


def test_overrides_do_not_change_the_given_params():
    apply_overrides(PARAMS, {"max_depth": 1, "predict.extra": 1})
    assert PARAMS["train_model"]["max_depth"] == 5
    assert "extra" not in PARAMS["predict"]


def test_no_overrides_gives_an_equal_copy():
    result = apply_overrides(PARAMS, {})
    assert result == PARAMS
    assert result["train_model"] is not PARAMS["train_model"]


def test_unknown_bare_key_is_an_error_with_a_suggestion():
    with pytest.raises(ConfigError) as info:
        apply_overrides(PARAMS, {"max_dept": 3})
    message = str(info.value)
    assert "param 'max_dept' is not a param of any step being run" in message
    assert "did you mean 'max_depth'?" in message
    assert "batch_size, max_depth, seed, target" in message
    assert "STEP.KEY=VALUE" in message


def test_unknown_step_is_an_error_listing_the_steps():
    with pytest.raises(ConfigError) as info:
        apply_overrides(PARAMS, {"train_modl.max_depth": 3})
    message = str(info.value)
    assert "param 'train_modl.max_depth': step 'train_modl' is not being run" in message
    assert "did you mean 'train_model'?" in message
    assert "make_data, predict, train_model" in message


def test_step_not_selected_for_this_run_is_an_error():
    selected = {"predict": PARAMS["predict"]}
    with pytest.raises(ConfigError, match=r"step 'train_model' is not being run; valid: predict"):
        apply_overrides(selected, {"train_model.max_depth": 3})
