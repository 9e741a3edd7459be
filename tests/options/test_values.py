"""Every value checked before work starts: nan/inf refused for every float option and every key=value
list, ranges stated in the schema, the rules validate.py owns (drift found in issue 11), one size parser.
All through ``parse_args`` (the command line and --config_file), as the scripts, GUI and node use it."""

import logging

import pytest

from library.data.errors import DatasetError
from library.data.params import DataOptions
from library.data.prepare import prepare_datasets
from library.errors import UserError
from library.options import OPTIONS, Option, namespace_from, parse_args

ARGV = ["--pretrained_model_name_or_path", "m.safetensors", "--train_data_dir", "data", "--resolution", "512"]
FLOATS = [o for o in OPTIONS if o.type in ("float", "int_or_float") and o.finite]


def parse(*extra, script="train_network"):
    return parse_args([*ARGV, *extra], script, check_files=False)


def refused(*extra, script="train_network") -> str:
    with pytest.raises(UserError) as e:
        parse(*extra, script=script)
    return str(e.value)


def _script(option):
    return option.scripts[0]


@pytest.mark.parametrize("option", FLOATS, ids=[o.name for o in FLOATS])
@pytest.mark.parametrize("word", ["nan", "inf", "-inf", "1e999"])
def test_no_float_option_takes_nan_or_inf_on_the_command_line(option, word):
    message = refused(f"--{option.name}={word}", script=_script(option))
    assert f"--{option.name}" in message and "finite number" in message


@pytest.mark.parametrize("option", FLOATS, ids=[o.name for o in FLOATS])
def test_no_float_option_takes_nan_in_a_config_file_or_from_the_gui_and_node(option, tmp_path):
    value = "[nan]" if option.nargs else "nan"
    config = tmp_path / "c.toml"
    config.write_text(f"[x]\n{option.name} = {value}\n")
    message = refused("--config_file", str(config), script=_script(option))
    assert option.name in message and "c.toml" in message and "finite number" in message
    with pytest.raises(UserError, match=f"{option.name} in the node .*finite number"):
        namespace_from({option.name: [float("inf")] if option.nargs else float("inf")}, _script(option), "the node")


def test_every_float_option_states_its_range():
    """A new float option says min/gt/max, or unbounded=True when any finite number makes sense."""
    silent = [o.name for o in FLOATS if o.status == "supported" and not o.unbounded
              and (o.min, o.gt, o.max) == (None, None, None)]
    assert not silent, f"float options without a range in library/options/definitions.py: {silent}"
    assert Option("ok_float", "float", None, "A new float.", "training", unbounded=True).from_text("-3.5") == -3.5


@pytest.mark.parametrize("option, entry", [
    ("network_args", "loraplus_lr_ratio=nan"),
    ("network_args", "conv_alpha=inf"),
    ("network_args", "block_alphas=1,2,nan"),
    ("network_args", "a_key_of_some_future_network=nan"),  # generic: whatever module reads it
    ("optimizer_args", "betas=0.9,nan"),
    ("optimizer_args", "weight_decay=1e999"),
    ("lr_scheduler_args", "T_max=inf"),
])
def test_key_value_lists_refuse_nan_and_inf(option, entry):
    message = refused(f"--{option}", entry)
    assert option in message and entry in message and "finite number" in message


def test_finite_key_values_still_pass():
    args = parse("--optimizer_args", "betas=0.9,0.99 weight_decay=0.01", "--network_args", "conv_dim=4",
                 "conv_alpha=1", "--lr_scheduler_args", "T_max=100")
    assert args.optimizer_args == ["betas=0.9,0.99 weight_decay=0.01"]


def test_min_timestep_equal_to_max_timestep_is_refused_before_loading():
    assert "min_timestep 500 must be below max_timestep 500" in refused("--min_timestep", "500", "--max_timestep", "500")
    parse("--min_timestep", "499", "--max_timestep", "500")


def test_adaptive_noise_scale_needs_a_positive_noise_offset():
    assert "noise_offset above 0" in refused("--adaptive_noise_scale", "0.01", "--noise_offset", "0.0")
    parse("--adaptive_noise_scale", "-0.01", "--noise_offset", "0.1")


def test_zero_terminal_snr_rules_are_checked_by_the_options_layer():
    assert "infinity" in refused("--zero_terminal_snr", "--debiased_estimation_loss")
    assert "infinity" in refused("--zero_terminal_snr", "--v_pred_like_loss", "0.1")
    parse("--zero_terminal_snr", "--debiased_estimation_loss", "--v_parameterization")


def test_options_without_effect_are_noticed(caplog):
    with caplog.at_level(logging.WARNING, logger="lorasmith.options"):
        parse("--noise_offset_random_strength", "--ip_noise_gamma_random_strength")
    text = caplog.text
    assert "noise_offset_random_strength has no effect without --noise_offset" in text
    assert "ip_noise_gamma_random_strength has no effect without --ip_noise_gamma" in text


@pytest.mark.parametrize("value", ['"512,"', "512.7", '"512,768,2"'])
def test_one_size_parser_for_the_command_line_and_the_dataset_config(tmp_path, value):
    assert "resolution" in refused("--resolution", value.strip('"'))
    (tmp_path / "img").mkdir()
    config = tmp_path / "ds.toml"
    config.write_text(f"[[datasets]]\nresolution = {value}\n[[datasets.subsets]]\nimage_dir = '{tmp_path / 'img'}'\n")
    with pytest.raises(DatasetError, match="ds.toml.*resolution must be a size"):
        prepare_datasets(DataOptions(dataset_config=str(config)))


def test_whole_float_sizes_are_the_same_everywhere(tmp_path):
    config = tmp_path / "c.toml"
    config.write_text("resolution = 512.0\n")
    args = parse_args(ARGV[:4] + ["--config_file", str(config)], check_files=False)
    assert args.resolution == (512, 512)


def test_one_field_check_for_forms():
    """What a GUI field or a node input calls: the schema's conversion, range and nan/inf checks at once."""
    from library.options import check_value

    assert check_value("unet_lr", "1e-4") == 1e-4
    for name, value, words in (("unet_lr", "nan", "finite number"), ("network_alpha", float("inf"), "finite number"),
                               ("network_dim", 0, "at least 1"), ("caption_dropout_rate", 1.5, "at most 1"),
                               ("learnig_rate", 1, "did you mean")):
        with pytest.raises(UserError, match=f"{name} in the form.*{words}|{name}.*{words}"):
            check_value(name, value, source="the form")


@pytest.mark.parametrize("extra, words", [
    (("--resolution", "100000"), "resolution must be at most 8192"),
    (("--max_bucket_reso", "65536"), "max_bucket_reso must be at most 8192"),
    (("--dataset_repeats", "1000000000000"), "dataset_repeats must be at most 100000"),
])
def test_sizes_and_counts_have_upper_bounds(extra, words):
    assert words in refused(*extra)
