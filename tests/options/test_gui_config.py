"""kohya_ss GUI configs (tests/options/data/kohya_ss_gui_*.toml, written by the GUI's rules) load and train unchanged."""

import logging
from pathlib import Path

import pytest

from library.errors import UserError
from library.options import parse_args, read_config_file
from library.train.entry import train

DATA = Path(__file__).resolve().parent / "data"
SD15 = str(DATA / "kohya_ss_gui_sd15_v24.toml")
SDXL = str(DATA / "kohya_ss_gui_sdxl_prodigy.toml")


def _local(ckpt, data, out):
    """The machine-specific paths a user would point at their own files, and a tiny, short fp32 CPU run."""
    return ["--pretrained_model_name_or_path", ckpt, "--train_data_dir", str(data / "reg"), "--output_dir", str(out),
            "--resolution", "64", "--min_bucket_reso", "64", "--max_train_epochs", "1", "--mixed_precision", "no",
            "--save_precision", "float"]


def test_sd15_gui_config_reads_as_the_gui_means_it(tmp_path, caplog):
    caplog.set_level(logging.WARNING, "lorasmith.options")
    values, sources = read_config_file(SD15, "train_network")
    assert values["max_train_epochs"] == 4 and "(epoch)" in sources["max_train_epochs"]  # epoch -> max_train_epochs
    assert values["persistent_data_loader_workers"] is False  # 0 is a flag's false
    assert values["network_args"] == [] and values["optimizer_args"] == []
    for unset in ("dataset_config", "vae", "reg_data_dir", "sample_prompts", "resume", "network_weights"):
        assert values[unset] is None, unset  # "" means not set
    assert "multires_noise_iterations" not in values  # noise_offset_type "Original"
    notice = [r.message for r in caplog.records if "kohya_ss GUI config" in r.message]
    assert len(notice) == 1
    assert "epoch = 4: max_train_epochs = 4" in notice[0] and "noise_offset_type = 'Original'" in notice[0]
    assert "lowvram" in notice[0] and "stop_text_encoder_training" in notice[0]


def test_sdxl_prodigy_gui_config_noise_kind_and_int_flags(caplog):
    values, _ = read_config_file(SDXL, "sdxl_train_network")
    assert values["persistent_data_loader_workers"] is True  # the GUI writes int(True)
    assert values["max_train_epochs"] == 10 and values["noise_offset"] == pytest.approx(0.0357)
    assert "multires_noise_iterations" not in values  # written, but the GUI's noise kind is Original
    assert "multires_noise_iterations is not used" in caplog.text


def test_multires_noise_kind_drops_the_offset(write_toml, caplog):
    config = write_toml("noise_offset_type = \"Multires\"\nnoise_offset = 0.1\nmultires_noise_iterations = 8\n"
                        "multires_noise_discount = 0.2\nadaptive_noise_scale = 0.01\n")
    values, _ = read_config_file(config, "train_network")
    assert values == {"multires_noise_iterations": 8, "multires_noise_discount": 0.2}
    assert "noise_offset, adaptive_noise_scale are not used" in caplog.text


@pytest.mark.parametrize("text,message", [
    ("noise_offset_type = \"Perlin\"\n", r"noise_offset_type in .* must be \"Original\" or \"Multires\", got 'Perlin'"),
    ("epoch = \"ten\"\n", r"epoch in .* must be a whole number of epochs"),
    ("persistent_data_loader_workers = 2\n", r"persistent_data_loader_workers in .* must be true or false"),
    ("[a]\nnetwork_dmi = 8\n", r"unknown key 'network_dmi' in .* \[a\]; did you mean 'network_dim'\?"),
    ("save_every_n_epoch = 1\n", r"did you mean 'save_every_n_epochs'\?"),
])
def test_gui_values_that_cannot_be_meant_are_errors(write_toml, text, message):
    with pytest.raises(UserError, match=message):
        read_config_file(write_toml(text), "train_network")


def test_epoch_loses_to_max_train_epochs_and_unknown_keys_only_warn(write_toml, caplog):
    config = write_toml("epoch = 7\nmax_train_epochs = 2\nsome_future_option = true\nlearning_rate_te1 = 1e-5\n")
    values, _ = read_config_file(config, "train_network")
    assert values == {"max_train_epochs": 2}
    assert "max_train_epochs 2 is set and wins" in caplog.text
    assert "unknown key 'some_future_option'" in caplog.text and "is ignored, as kohya does" in caplog.text


@pytest.mark.parametrize("config,script,family", [(SD15, "train_network", "sd1"), (SDXL, "sdxl_train_network", "sdxl")])
def test_gui_configs_train_a_few_steps(tiny_ckpt, demo_data, tmp_path, config, script, family):
    args = parse_args(["--config_file", config] + _local(tiny_ckpt(family), demo_data, tmp_path / "out"), script)
    assert args.optimizer_type == ("Prodigy" if family == "sdxl" else "AdamW")
    result = train(args, script)
    assert Path(result.lora).is_file() and result.steps == len(result.losses) > 0
