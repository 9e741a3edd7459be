import argparse
import re
from dataclasses import fields

import pytest

from library.options import BY_NAME, GROUPS, OPTIONS, SCRIPTS, Option, build_parser, defaults, options_for
from library.options.schema import ConversionError


def test_every_option_has_help_group_and_a_valid_name():
    assert len(OPTIONS) >= 150
    for option in OPTIONS:
        assert re.fullmatch(r"[a-z][a-z0-9_]*", option.name), option.name
        assert option.help.strip() and option.help.rstrip().endswith((".", ")")), option.name
        assert option.group in GROUPS
    assert len(BY_NAME) == len(OPTIONS)
    assert all(any(o.group == g for o in OPTIONS) for g in GROUPS)


@pytest.mark.parametrize("script", SCRIPTS)
def test_parser_builds_and_lists_the_scripts_options(script):
    parser = build_parser(script)
    flags = {s for a in parser._actions for s in a.option_strings}
    for option in OPTIONS:
        assert (f"--{option.name}" in flags) == option.for_script(script), option.name
    assert "--config_file" in flags and "--output_config" in flags
    parser.format_help()  # no formatting errors (e.g. a stray % in a help text)


def test_sdxl_only_and_sd_only_options():
    sd = {o.name for o in options_for("train_network")}
    sdxl = {o.name for o in options_for("sdxl_train_network")}
    assert "cache_text_encoder_outputs" in sdxl - sd
    assert "v2" in sd - sdxl
    with pytest.raises(ValueError):
        options_for("train_db")


def test_flags_take_no_value_and_lists_take_many():
    parser = build_parser("sdxl_train_network")
    ns = parser.parse_args(["--enable_bucket", "--text_encoder_lr", "1e-4", "5e-5", "--network_args", "conv_dim=4"])
    assert vars(ns) == {"enable_bucket": True, "text_encoder_lr": [1e-4, 5e-5], "network_args": ["conv_dim=4"]}


def test_unset_options_are_absent_from_the_parsed_namespace():
    assert vars(build_parser().parse_args([])) == {}


@pytest.mark.parametrize(
    "name,value,expected",
    [
        ("resolution", "512", (512, 512)),
        ("resolution", "512,768", (512, 768)),
        ("resolution", 1024, (1024, 1024)),
        ("resolution", [640, 480], (640, 480)),
        ("lr_warmup_steps", "100", 100),
        ("lr_warmup_steps", "0.05", 0.05),
        ("lr_warmup_steps", 0.1, 0.1),
        ("learning_rate", "1e-4", 1e-4),
        ("learning_rate", 1, 1.0),
        ("network_dim", 16.0, 16),
        ("enable_bucket", "true", True),
        ("mixed_precision", "BF16", "bf16"),
        ("text_encoder_lr", 5e-5, [5e-5]),
        ("lr_warmup_steps", "5%", 0.05),
        ("optimizer_args", "weight_decay=0.01 betas=0.9,0.99", ["weight_decay=0.01 betas=0.9,0.99"]),
        ("vae", "", None),
    ],
)
def test_value_conversion(name, value, expected):
    assert BY_NAME[name].from_value(value) == expected


@pytest.mark.parametrize(
    "name,value",
    [("network_dim", "four"), ("network_dim", True), ("network_dim", 1.5), ("learning_rate", "fast"),
     ("enable_bucket", 1), ("resolution", "512,768,3"), ("caption_extension", 3), ("mixed_precision", "fp32"),
     ("max_token_length", 100), ("network_dim", [4])],
)
def test_conversion_errors_say_what_is_expected(name, value):
    with pytest.raises(ConversionError, match=r"must be"):
        BY_NAME[name].from_value(value)


def test_option_definition_mistakes_are_caught():
    with pytest.raises(ValueError, match="group"):
        Option("x", "int", None, "Help.", "nope")
    with pytest.raises(ValueError, match="flag"):
        Option("x", "bool", True, "Help.", "misc")
    with pytest.raises(ValueError, match="help"):
        Option("x", "int", None, " ", "misc")


def test_defaults_hold_every_option_for_both_scripts():
    ns = defaults("train_network")
    assert isinstance(ns, argparse.Namespace)
    for option in OPTIONS:
        assert hasattr(ns, option.name)
    assert ns.cache_text_encoder_outputs is False and ns.optimizer_type == "AdamW"


def test_scheduler_names_match_the_scheduler_layer():
    schedulers = pytest.importorskip("library.train.schedulers")
    from library.options.definitions import LR_SCHEDULERS

    assert set(LR_SCHEDULERS) == set(schedulers.SCHEDULER_NAMES)


def test_dataset_options_match_the_data_layer():
    """library.data maps command-line options onto DataOptions by name: names and defaults must agree."""
    params = pytest.importorskip("library.data.params")
    for f in fields(params.DataOptions):
        assert f.name in BY_NAME, f"DataOptions.{f.name} has no option in library/options/definitions.py"
        assert BY_NAME[f.name].default == f.default, f.name
