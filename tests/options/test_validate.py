import pytest

from library.errors import UserError
from library.options import check_paths, namespace_from, network_kwargs, notices, split_key_values, validate

BASE = {"pretrained_model_name_or_path": "model.safetensors", "train_data_dir": "data", "resolution": 512}


def build(script="train_network", **values):
    return namespace_from({**BASE, **values}, script, check=False)


def error(script="train_network", **values):
    with pytest.raises(UserError) as e:
        validate(build(script, **values), script)
    return str(e.value)


def test_a_plain_config_is_valid():
    validate(build(network_dim=16, enable_bucket=True, mixed_precision="fp16", full_fp16=True), "train_network")
    validate(build("sdxl_train_network", resolution=1024, cache_text_encoder_outputs=True,
                   network_train_unet_only=True, text_encoder_lr=[1e-5, 2e-5]), "sdxl_train_network")


@pytest.mark.parametrize(
    "values,expected",
    [
        ({"network_dim": 0}, "network_dim must be at least 1, got 0"),
        ({"learning_rate": -1e-4}, "learning_rate must be at least 0"),
        ({"unet_lr": -1.0}, "unet_lr must be at least 0"),
        ({"text_encoder_lr": [1e-4, -1.0]}, "text_encoder_lr must be at least 0"),
        ({"train_batch_size": 0}, "train_batch_size must be at least 1"),
        ({"gradient_accumulation_steps": 0}, "gradient_accumulation_steps must be at least 1"),
        ({"resolution": 0}, "resolution must be greater than 0"),
        ({"caption_dropout_rate": 1.5}, "caption_dropout_rate must be at most 1"),
        ({"network_alpha": -1}, "network_alpha must be at least 0"),
        ({"max_timestep": 2000}, "max_timestep must be at most 1000"),
    ],
)
def test_ranges(values, expected):
    assert expected in error(**values)


def test_resolution_rules():
    assert "use 448 or 512" in error(resolution=500, enable_bucket=True)
    assert "use 512,768 or 512,832" in error(resolution="512,800", enable_bucket=True, bucket_reso_steps=64)
    assert "multiple of 8" in error(resolution=500)
    assert "bucket_reso_steps 12 " in error(bucket_reso_steps=12)
    assert "--resolution is not set" in error(resolution=None)
    validate(build(resolution=None, train_data_dir=None, dataset_config="d.toml"), "train_network")
    validate(build(resolution=520), "train_network")  # no buckets: a multiple of 8 is enough


def test_bucket_limits():
    assert "swap them" in error(enable_bucket=True, min_bucket_reso=1024, max_bucket_reso=512)
    assert "lower min_bucket_reso to 512" in error(enable_bucket=True, min_bucket_reso=640, max_bucket_reso=1024)
    assert "raise max_bucket_reso to 1024" in error(resolution=1024, enable_bucket=True, max_bucket_reso=768)
    assert "min_bucket_reso 250 must be a multiple of bucket_reso_steps 64; use 192" in error(
        enable_bucket=True, min_bucket_reso=250)
    assert "use 1088" in error(enable_bucket=True, max_bucket_reso=1030)


@pytest.mark.parametrize("fmt", ["ckpt", "pt"])
def test_save_model_as_only_safetensors(fmt):
    message = error(save_model_as=fmt)
    assert f"save_model_as {fmt}" in message and 'save_model_as = "safetensors"' in message


def test_mixed_precision_choices():
    with pytest.raises(UserError, match="mixed_precision in the given values must be one of no, fp16, bf16"):
        build(mixed_precision="fp32")


def test_conflicting_flags():
    assert "exclude each other" in error(network_train_unet_only=True, network_train_text_encoder_only=True)
    assert "full_fp16 needs mixed_precision fp16" in error(full_fp16=True)
    assert "full_fp16 needs mixed_precision fp16 (it is bf16)" in error(full_fp16=True, mixed_precision="bf16")
    assert "full_bf16 needs mixed_precision bf16" in error(full_bf16=True, mixed_precision="fp16")
    assert "exclude each other" in error(full_fp16=True, full_bf16=True, mixed_precision="fp16")
    assert "fp8_base needs mixed_precision" in error(fp8_base=True)


@pytest.mark.parametrize(
    "values", [{"shuffle_caption": True}, {"caption_dropout_rate": 0.1}, {"caption_tag_dropout_rate": 0.2},
               {"caption_dropout_every_n_epochs": 2}, {"enable_wildcard": True}],
)
def test_text_encoder_cache_needs_fixed_captions(values):
    message = error("sdxl_train_network", cache_text_encoder_outputs=True, network_train_unet_only=True, **values)
    assert "needs captions that never change" in message and next(iter(values)) in message


def test_text_encoder_cache_needs_unet_only():
    assert "--network_train_unet_only" in error("sdxl_train_network", cache_text_encoder_outputs_to_disk=True)


def test_augmentation_with_latent_cache_is_a_notice_not_an_error():
    args = build(cache_latents=True, color_aug=True, random_crop=True)
    validate(args, "train_network")
    assert any("color_aug and random_crop" in n for n in notices(args))


def test_required_inputs():
    assert "pretrained_model_name_or_path" in error(pretrained_model_name_or_path=None)
    assert "no training images" in error(train_data_dir=None)
    assert "--in_json needs --train_data_dir" in error(train_data_dir=None, in_json="meta.json")


def test_lr_scheduler_names():
    assert "did you mean 'cosine'" in error(lr_scheduler="cosin")
    for name in ("torch.optim.lr_scheduler.StepLR", "adafactor:1e-3", "COSINE"):
        validate(build(lr_scheduler=name), "train_network")


def test_warmup_must_have_an_effect():
    assert "use constant_with_warmup" in error(lr_warmup_steps=100)
    assert "Adafactor's own relative_step" in error(optimizer_type="Adafactor", lr_warmup_steps=100,
                                                     lr_scheduler="constant_with_warmup")
    for values in ({"lr_scheduler": "constant_with_warmup"}, {"optimizer_type": "AdamWScheduleFree"},
                   {"optimizer_type": "Adafactor", "lr_scheduler": "constant_with_warmup",
                    "optimizer_args": ["relative_step=False", "scale_parameter=False", "warmup_init=False"]},
                   {"lr_scheduler_type": "torch.optim.lr_scheduler.LinearLR"}):
        validate(build(lr_warmup_steps=100, **values), "train_network")


def test_lr_warmup_fraction():
    assert "must be below 1" in error(lr_warmup_steps=1.0)
    assert "lr_decay_steps 2.5" in error(lr_decay_steps=2.5)
    assert "lr_warmup_steps must be at least 0" in error(lr_warmup_steps=-5)
    validate(build(lr_warmup_steps=0.1, lr_scheduler="cosine"), "train_network")
    validate(build(lr_warmup_steps=100, lr_scheduler="cosine"), "train_network")


def test_loss_and_noise_rules():
    assert "needs --noise_offset" in error(adaptive_noise_scale=0.01)
    assert "only applies with --v_parameterization" in error(scale_v_pred_loss_like_noise_pred=True)
    assert "cannot be used with --v_parameterization" in error(v_pred_like_loss=0.1, v_parameterization=True)
    assert "min_timestep 500 must be below max_timestep 100" in error(min_timestep=500, max_timestep=100)


def test_network_rules():
    assert "dim_from_weights needs --network_weights" in error(dim_from_weights=True)
    assert "one multiplier per file" in error(base_weights=["a.safetensors"], base_weights_multiplier=[1.0, 0.5])
    assert "did you mean 'conv_dim'" in error(network_args=["conv_dims=4"])
    assert "is not key=value" in error(network_args=["conv_dim"])
    assert "must be an integer" in error(network_args=["conv_dim=four"])
    assert "set it in one place only" in error(loraplus_lr_ratio=16, network_args=["loraplus_lr_ratio=8"])
    assert "give one (SD1.x/2.x" in error(text_encoder_lr=[1e-4, 1e-4])
    assert "give two for SDXL" in error("sdxl_train_network", resolution=1024, text_encoder_lr=[1e-4] * 3)


def test_network_kwargs_and_key_value_splitting():
    args = build(network_args=["conv_dim=4 conv_alpha=1"], loraplus_lr_ratio=16)
    assert network_kwargs(args) == {"conv_dim": "4", "conv_alpha": "1", "loraplus_lr_ratio": "16.0"}
    assert split_key_values(["weight_decay=0.01", "betas=0.9, 0.999 decouple = True"], "optimizer_args") == {
        "weight_decay": "0.01", "betas": "0.9, 0.999", "decouple": "True"}
    assert "sets 'a' twice" in error(optimizer_args=["a=1", "a=2"])
    assert "is not key=value" in error(lr_scheduler_args=["100"])


def test_saving_and_logging_rules():
    assert "plain file name" in error(output_name="sub/name")
    assert "use 'mylora'" in error(output_name="mylora.safetensors")
    assert "needs --logging_dir" in error(log_with="tensorboard")
    validate(build(log_with="wandb"), "train_network")


def test_unsupported_and_ignored_options():
    assert "not supported" in error(initial_step=100)
    args = build(face_crop_aug_range="2.0,4.0", debug_dataset=True)
    validate(args, "train_network")
    found = notices(args)
    assert any(n.startswith("face_crop_aug_range is accepted") for n in found)
    assert any(n.startswith("debug_dataset is accepted") for n in found)


def test_mask_and_validation_options_without_their_switch_say_so():
    found = notices(build(alpha_mask=True, validate_every_n_steps=10))
    assert any("alpha_mask only matter with --masked_loss" in n for n in found)
    assert any("validate_every_n_steps do nothing without validation_split" in n for n in found)
    assert not notices(build(alpha_mask=True, masked_loss=True, validate_every_n_steps=10, validation_split=0.1))


def test_dataset_config_wins_over_folders():
    assert "are ignored because dataset_config" in notices(build(dataset_config="d.toml"))[0]


def test_other_notices():
    found = notices(build(sample_every_n_steps=10, xformers=True, sdpa=True, optimizer_type="Prodigy",
                          learning_rate=1e-4))
    assert len(found) == 3
    assert "clip_skip is ignored for SDXL" in notices(build(clip_skip=2), "sdxl_train_network")[0]


def test_sources_appear_in_messages():
    args = build(network_dim=0)
    with pytest.raises(UserError, match=r"network_dim must be at least 1, got 0 \(from x.toml \[net\]\)"):
        validate(args, "train_network", {"network_dim": "x.toml [net]"})


def test_check_paths(tmp_path):
    model = tmp_path / "m.safetensors"
    model.write_bytes(b"")
    data = tmp_path / "data"
    data.mkdir()
    good = build(pretrained_model_name_or_path=str(model), train_data_dir=str(data))
    check_paths(good)
    with pytest.raises(UserError, match="works offline"):
        check_paths(build(pretrained_model_name_or_path=str(tmp_path / "missing.safetensors")))
    with pytest.raises(UserError, match="train_data_dir .* not found"):
        check_paths(build(pretrained_model_name_or_path=str(model), train_data_dir=str(tmp_path / "nope")))
    with pytest.raises(UserError, match="is a file; it must be a folder"):
        check_paths(build(pretrained_model_name_or_path=str(model), train_data_dir=str(model)))
    with pytest.raises(UserError, match="base_weights"):
        check_paths(build(pretrained_model_name_or_path=str(model), train_data_dir=str(data), base_weights=["x"]))
