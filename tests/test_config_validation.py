"""GRPOConfig refuses every bad setting at construction, with a message that says what to set."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import pytest

from multireward_grpo.train.config import GRPOConfig

FLOAT_FIELDS = [f.name for f in fields(GRPOConfig) if f.type == "float"]
INT_FIELDS = [f.name for f in fields(GRPOConfig) if f.type == "int"]
BOOL_FIELDS = [f.name for f in fields(GRPOConfig) if f.type == "bool"]


# --------------------------------------------------------------------------- floats (C15)


def test_the_float_fields_are_the_documented_ones():
    # The tables below are driven by the annotations; make sure they see the options we document.
    assert set(FLOAT_FIELDS) >= {"temperature", "top_p", "lr", "kl_coef", "ppo_clip", "max_grad_norm",
                                 "weight_decay", "lora_dropout"}


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
@pytest.mark.parametrize("name", FLOAT_FIELDS)
def test_every_float_option_must_be_finite(name, value):
    with pytest.raises(ValueError, match=rf"{name} must be a finite number"):
        GRPOConfig(**{name: value})


# (field, value just outside a bound, the bound as the message states it)
OUT_OF_BOUNDS = [
    ("temperature", 0.0, "> 0"), ("temperature", -1.0, "> 0"),
    ("top_p", 0.0, "> 0"), ("top_p", 1.0 + 1e-9, "<= 1"),
    ("lr", 0.0, "> 0"), ("lr", -1e-3, "> 0"),
    ("kl_coef", -1e-12, ">= 0"),
    ("ppo_clip", 0.0, "> 0"), ("ppo_clip", 1.0, "< 1"),
    ("max_grad_norm", -1e-12, ">= 0"),
    ("weight_decay", -1e-12, ">= 0"),
    ("lora_dropout", -1e-12, ">= 0"), ("lora_dropout", 1.0, "< 1"),
]
# (field, a value on or next to a bound that is allowed)
ON_BOUNDS = [
    ("temperature", 1e-6), ("top_p", 1.0), ("top_p", 1e-9), ("lr", 1e-12), ("kl_coef", 0.0),
    ("ppo_clip", 1e-9), ("ppo_clip", 1 - 1e-9), ("max_grad_norm", 0.0), ("weight_decay", 0.0),
    ("lora_dropout", 0.0), ("lora_dropout", 1 - 1e-9),
]


@pytest.mark.parametrize("name, value, bound", OUT_OF_BOUNDS)
def test_float_bounds_are_enforced(name, value, bound):
    with pytest.raises(ValueError, match=rf"{name} must be {bound}") as err:
        GRPOConfig(**{name: value})
    assert repr(value) in str(err.value) or str(value) in str(err.value)


@pytest.mark.parametrize("name, value", ON_BOUNDS)
def test_float_bounds_are_inclusive_where_documented(name, value):
    assert getattr(GRPOConfig(**{name: value}), name) == value


@pytest.mark.parametrize("name", FLOAT_FIELDS)
def test_float_options_accept_numeric_strings_and_refuse_other_types(name):
    good = GRPOConfig.__dataclass_fields__[name].default
    config = GRPOConfig(**{name: repr(float(good))})
    assert getattr(config, name) == float(good) and type(getattr(config, name)) is float
    for bad in ("fast", None, True, [good]):
        with pytest.raises(TypeError, match=rf"{name} must be a number"):
            GRPOConfig(**{name: bad})


# --------------------------------------------------------------------------- ints, bools, strings (C16)


@pytest.mark.parametrize("name", INT_FIELDS)
def test_int_options_accept_exact_integers_only(name):
    good = max(2, GRPOConfig.__dataclass_fields__[name].default)
    for exact in (str(good), float(good), f"{good}.0"):
        value = getattr(GRPOConfig(**{name: exact}), name)
        assert value == good and type(value) is int
    for inexact in (good + 0.5, f"{good}.5"):
        with pytest.raises(ValueError, match=rf"{name} must be a whole number"):
            GRPOConfig(**{name: inexact})
    for wrong in (True, None, [good], "eight", math.nan):
        with pytest.raises((TypeError, ValueError), match=rf"{name} must be"):
            GRPOConfig(**{name: wrong})


@pytest.mark.parametrize("value", [0, -4])
def test_lora_alpha_must_be_positive(value):
    with pytest.raises(ValueError, match=rf"lora_alpha={value} must be a positive integer"):
        GRPOConfig(lora_alpha=value)


@pytest.mark.parametrize("name", BOOL_FIELDS)
def test_bool_options_refuse_strings_and_numbers(name):
    for wrong in ("no", 0, None):
        with pytest.raises(TypeError, match=rf"{name} must be True or False"):
            GRPOConfig(**{name: wrong})


def test_device_none_and_malformed_devices_are_refused_early():
    with pytest.raises(TypeError, match="device must be a string such as 'auto', 'cpu' or 'cuda:0', got None"):
        GRPOConfig(device=None)
    for bad in ("gpu", "cuda:x", "cuda:-1", "cpu:0:1", ""):
        with pytest.raises(ValueError, match="use auto, cpu, cuda, cuda:N or mps"):
            GRPOConfig(device=bad)
    assert GRPOConfig(device="cuda:1").device == "cuda:1"


@pytest.mark.parametrize("name, typo, suggestion", [
    ("loss_type", "grpoo", "grpo"), ("lr_scheduler", "cosin", "cosine"), ("dtype", "bfloat61", "bfloat16"),
    ("nan_policy", "omitt", "omit"), ("report_to", "tensorbord", "tensorboard"), ("mode", "nna", "na"),
])
def test_choice_typos_get_a_suggestion(name, typo, suggestion):
    with pytest.raises(ValueError, match=rf"\(did you mean '{suggestion}'\?\)"):
        GRPOConfig(**{name: typo})


def test_unknown_mode_lists_the_registered_estimators():
    with pytest.raises(ValueError, match=r"mode='zzz'; choose one of .*\ban\b.*\bna\b"):
        GRPOConfig(mode="zzz")
    with pytest.raises(TypeError, match="mode must be a string"):
        GRPOConfig(mode=["na"])
    assert GRPOConfig(mode="GDPO").mode == "GDPO"  # the registry is case-insensitive


def test_a_registered_estimator_is_a_valid_mode():
    from multireward_grpo.advantage import register_estimator, unregister_estimator

    register_estimator("cfg_test_mode", lambda r, w, *, mask, options: r[..., 0], description="test")
    try:
        assert GRPOConfig(mode="cfg_test_mode").mode == "cfg_test_mode"
    finally:
        unregister_estimator("cfg_test_mode")


def test_validating_the_mode_does_not_import_torch():
    code = ("import sys; from multireward_grpo.train.config import GRPOConfig\n"
            "try:\n    GRPOConfig(mode='nna')\nexcept ValueError as e:\n    print(e)\n"
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "did you mean 'na'" in out and out.strip().endswith("False")


@pytest.mark.parametrize("weights, error, fragment", [
    ({"a": 1.0}, TypeError, "weights must be a sequence of numbers"),
    (1.0, TypeError, "weights must be a sequence of numbers"),
    ("a,b", ValueError, "weights must be comma-separated numbers like 1,1,0.5; got 'a,b'"),
    ([1.0, "x"], TypeError, r"weights\[1\] must be a number"),
    ([1.0, None], TypeError, r"weights\[1\] must be a number"),
    ([1.0, math.nan], ValueError, r"weights\[1\] must be a finite number"),
    ([1.0, -0.5], ValueError, r"weights\[1\] must be >= 0"),
    ([0.0, 0.0], ValueError, "not all 0"),
    ([], ValueError, "weights is empty"),
])
def test_bad_weights(weights, error, fragment):
    with pytest.raises(error, match=fragment):
        GRPOConfig(weights=weights)


def test_weights_from_strings_and_arrays_become_float_tuples():
    np = pytest.importorskip("numpy")
    assert GRPOConfig(weights=" 1, 2 ,0.5").weights == (1.0, 2.0, 0.5)
    assert GRPOConfig(weights=np.array([1, 2])).weights == (1.0, 2.0)
    assert GRPOConfig(weights=["1", "1e-1"]).weights == (1.0, 0.1)


def test_lora_target_modules_refuse_blank_names():
    for bad in (("q_proj", ""), ("q_proj", "  "), ("q_proj", 3)):
        with pytest.raises((TypeError, ValueError), match=r"lora_target_modules\[1\] must be a non-empty module name"):
            GRPOConfig(lora_target_modules=bad)
    with pytest.raises(ValueError, match="use_lora=True needs lora_target_modules"):
        GRPOConfig(lora_target_modules=" , ")
    assert GRPOConfig(lora_target_modules="q_proj, v_proj,").lora_target_modules == ("q_proj", "v_proj")


def test_report_to_is_checked_and_deduplicated():
    assert GRPOConfig(report_to="tensorboard,jsonl,tensorboard").report_to == ("jsonl", "tensorboard")
    with pytest.raises(TypeError, match="report_to"):
        GRPOConfig(report_to=[1])


def test_paths_and_strings():
    config = GRPOConfig(out_dir=Path("runs") / "a", resume_from=Path("runs") / "a" / "checkpoint-2")
    assert config.out_dir == str(Path("runs") / "a") and isinstance(config.resume_from, str)
    json.dumps(config.to_dict())
    for name in ("model", "out_dir"):
        with pytest.raises(ValueError, match=f"{name} must be a non-empty"):
            GRPOConfig(**{name: " "})
    with pytest.raises(TypeError, match="system_prompt must be a string or None"):
        GRPOConfig(system_prompt=5)


# --------------------------------------------------------------------------- conditioning (B9)


@pytest.mark.parametrize("rule, fragment", [
    ("-1:2", "conditioning rule '-1:2': .*gate must be a channel index >= 0"),
    ("0:-2", "conditioning rule '0:-2': .*target must be a channel index >= 0"),
    ((-2, 1), r"conditioning rule \(-2, 1\): .*gate must be a channel index >= 0"),
    ({"gate": 0, "target": -1}, "target must be a channel index >= 0"),
    ("0:0", "conditioning rule '0:0': the gate and the target must be different channels"),
    ((1, 1), r"conditioning rule \(1, 1\): the gate and the target must be different channels"),
    ("0:5", "conditioning rule '0:5': .*target=5 but .*3 channels"),
    ("0-1", "conditioning rule '0-1'.*use GATE:TARGET"),
    ("a:1", "conditioning rule 'a:1'.*use GATE:TARGET"),
    ("0:1:zero_fil", r"did you mean 'zero_fill'\?"),
    ("0:1:zero_fill:x", "conditioning rule '0:1:zero_fill:x'.*GAMMA"),
])
def test_conditioning_rules_are_checked_with_the_rule_in_the_message(rule, fragment):
    with pytest.raises(ValueError, match=fragment):
        GRPOConfig(conditioning=[rule])


def test_a_single_rule_tuple_is_one_rule_and_round_trips():
    config = GRPOConfig(conditioning=(0, 1))
    assert [(r.gate, r.target) for r in config.parsed_conditioning()] == [(0, 1)]
    assert GRPOConfig.from_dict(config.to_dict()) == config
    config = GRPOConfig(conditioning=["0:1", (0, 2, "subgroup")])
    assert GRPOConfig.from_dict(json.loads(json.dumps(config.to_dict()))).parsed_conditioning() == \
        config.parsed_conditioning()


def test_conditioning_refuses_other_types():
    with pytest.raises(TypeError, match="conditioning"):
        GRPOConfig(conditioning=[3.5])


# --------------------------------------------------------------------------- from_dict / from_file


def test_unknown_keys_get_a_suggestion_each():
    with pytest.raises(ValueError) as err:
        GRPOConfig.from_dict({"n_step": 5, "temprature": 0.5, "zzz": 1})
    message = str(err.value)
    assert "unknown GRPOConfig option(s) ['n_step', 'temprature', 'zzz']" in message
    assert "'n_step' (did you mean 'n_steps'?)" in message
    assert "'temprature' (did you mean 'temperature'?)" in message
    assert "'zzz' (" not in message
    with pytest.raises(TypeError, match="from_dict needs a dict of options"):
        GRPOConfig.from_dict([("m", 4)])


def test_yaml_numbers_written_as_strings_are_read(tmp_path):
    pytest.importorskip("yaml")
    path = tmp_path / "grpo.yaml"
    path.write_text("lr: 1e-3\nm: 8\nkl_coef: 0\nweights: [1, 1, 0.5]\n")
    config = GRPOConfig.from_file(path)
    assert config.lr == 1e-3 and config.m == 8 and config.kl_coef == 0.0


@pytest.mark.parametrize("name, text, line", [
    ("bad.toml", 'mode = "na"\nm = \n', 2),
    ("bad.yaml", "mode: na\nweights: [1, 2\nm: 3\n", 3),
    ("bad.json", '{"mode": "na",\n "m": 4,\n}\n', 3),
])
def test_malformed_config_files_name_the_file_and_the_line(tmp_path, name, text, line):
    if name.endswith("yaml"):
        pytest.importorskip("yaml")
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(ValueError) as err:
        GRPOConfig.from_file(path)
    message = str(err.value)
    assert message.startswith(f"could not parse config file {path}") and f"line {line}" in message
    assert "\n" not in message


def test_invalid_values_in_a_file_name_the_file(tmp_path):
    path = tmp_path / "grpo.json"
    path.write_text('{"lr": -1}')
    with pytest.raises(ValueError, match=rf"config file {path}: lr must be > 0"):
        GRPOConfig.from_file(path)
    path.write_text("[1, 2]")
    with pytest.raises(ValueError, match="must hold a table of options"):
        GRPOConfig.from_file(path)
    with pytest.raises(FileNotFoundError):
        GRPOConfig.from_file(tmp_path / "missing.toml")
    with pytest.raises(ValueError, match="is a directory"):
        GRPOConfig.from_file(tmp_path)


def test_validation_does_not_mutate_the_callers_values():
    weights, conditioning = [1, 2, 3], ["0:1"]
    values = {"weights": weights, "conditioning": conditioning, "lr": "1e-3"}
    GRPOConfig.from_dict(values)
    assert values == {"weights": [1, 2, 3], "conditioning": ["0:1"], "lr": "1e-3"}


def test_replace_validates_again():
    with pytest.raises(ValueError, match="temperature must be a finite number"):
        GRPOConfig().replace(temperature=math.inf)


# --------------------------------------------------------------------------- eval_every needs eval prompts


def test_eval_every_without_eval_prompts_fails_before_the_model_loads(tmp_path):
    pytest.importorskip("torch")
    from multireward_grpo.train import GRPOTrainer

    config = GRPOConfig(model=str(tmp_path / "no-such-model"), eval_every=5, weights=(1.0,), out_dir=str(tmp_path))
    with pytest.raises(ValueError, match="eval_every=5 but no eval prompts"):
        GRPOTrainer(config, lambda completion, prompt: [1.0], ["a prompt"])
