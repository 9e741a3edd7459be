import glob
import os

import pytest

from library.options import parse_args, read_config_file

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PRESETS = sorted(glob.glob(os.path.join(ROOT, "presets", "*.toml")))
MACHINE_KEYS = ("pretrained_model_name_or_path", "train_data_dir", "reg_data_dir", "vae", "network_weights",
                "dataset_config", "resume", "sample_prompts", "logging_dir")


def script_for(path):
    return "sdxl_train_network" if os.path.basename(path).startswith("sdxl") else "train_network"


def test_the_four_presets_exist():
    names = {os.path.basename(p) for p in PRESETS}
    assert {"sd15_lora.toml", "sdxl_lora_prodigy.toml", "sdxl_lowvram_adafactor.toml", "demo.toml"} <= names


@pytest.mark.parametrize("path", PRESETS, ids=os.path.basename)
def test_preset_loads_and_validates(path, paths, caplog):
    argv, _ = paths
    args = parse_args(["--config_file", path] + argv, script_for(path))
    assert args.save_model_as == "safetensors" and args.network_module == "networks.lora"
    values, _ = read_config_file(path, script_for(path))
    assert not set(values) & set(MACHINE_KEYS), "presets hold no machine paths"
    assert not [r for r in caplog.records if "does nothing" in r.getMessage()]


def test_preset_values(paths):
    argv, _ = paths
    load = lambda name: parse_args(["--config_file", os.path.join(ROOT, "presets", name)] + argv,
                                   script_for(name))
    sd15 = load("sd15_lora.toml")
    assert (sd15.network_dim, sd15.learning_rate, sd15.train_batch_size, sd15.optimizer_type, sd15.lr_scheduler,
            sd15.mixed_precision, sd15.resolution, sd15.enable_bucket, sd15.caption_extension,
            sd15.save_every_n_epochs) == (4, 1e-4, 1, "AdamW", "constant", "no", (512, 512), True, ".txt", 1)
    prodigy = load("sdxl_lora_prodigy.toml")
    assert (prodigy.network_dim, prodigy.network_alpha, prodigy.optimizer_type, prodigy.learning_rate) == (
        96, 48, "Prodigy", 1.0)
    assert prodigy.optimizer_args == ["weight_decay=0.01", "decouple=True", "d0=0.0001", "use_bias_correction=True"]
    assert (prodigy.noise_offset, prodigy.caption_dropout_rate, prodigy.scale_weight_norms, prodigy.mixed_precision,
            prodigy.gradient_checkpointing, prodigy.resolution, prodigy.cache_latents) == (
        0.1, 0.1, 5, "bf16", True, (1024, 1024), True)
    low = load("sdxl_lowvram_adafactor.toml")
    assert low.optimizer_args == ["scale_parameter=False", "relative_step=False", "warmup_init=False"]
    assert (low.cache_text_encoder_outputs, low.network_train_unet_only, low.fp8_base, low.cache_latents_to_disk,
            low.lr_scheduler, low.lr_warmup_steps) == (True, True, True, True, "constant_with_warmup", 100)
    demo = load("demo.toml")
    assert (demo.resolution, demo.network_dim, demo.max_train_steps, demo.train_batch_size, demo.save_every_n_steps,
            demo.save_state, demo.sample_every_n_steps, demo.seed) == ((64, 64), 4, 40, 2, 20, True, 20, 42)
