"""LoRA metadata as kohya's train_network.py writes it: every ss_* key of a folder run, ss_datasets for
--dataset_config runs, the minimum keys under --no_metadata, and modelspec 1.0.1."""

import base64
import json

from safetensors import safe_open

from library.options import namespace_from
from library.train.entry import train
from tests.train.conftest import base_values

# every ss_* key kohya's train_network.py writes for a --train_data_dir run with --network_args (84; with the
# sshs_* hashes save_weights adds, kohya's 86)
KOHYA_FOLDER_RUN_KEYS = {
    "ss_validation_seed", "ss_validation_split", "ss_max_validation_steps", "ss_validate_every_n_epochs",
    "ss_validate_every_n_steps", "ss_num_validation_images",
    "ss_session_id", "ss_training_started_at", "ss_output_name", "ss_learning_rate", "ss_text_encoder_lr",
    "ss_unet_lr", "ss_num_train_images", "ss_num_reg_images", "ss_num_batches_per_epoch", "ss_num_epochs",
    "ss_gradient_checkpointing", "ss_gradient_accumulation_steps", "ss_max_train_steps", "ss_lr_warmup_steps",
    "ss_lr_scheduler", "ss_network_module", "ss_network_dim", "ss_network_alpha", "ss_network_dropout",
    "ss_mixed_precision", "ss_full_fp16", "ss_v2", "ss_base_model_version", "ss_clip_skip", "ss_max_token_length",
    "ss_cache_latents", "ss_seed", "ss_lowram", "ss_noise_offset", "ss_multires_noise_iterations",
    "ss_multires_noise_discount", "ss_adaptive_noise_scale", "ss_zero_terminal_snr", "ss_training_comment",
    "ss_sd_scripts_commit_hash", "ss_optimizer", "ss_max_grad_norm", "ss_caption_dropout_rate",
    "ss_caption_dropout_every_n_epochs", "ss_caption_tag_dropout_rate", "ss_face_crop_aug_range",
    "ss_prior_loss_weight", "ss_min_snr_gamma", "ss_scale_weight_norms", "ss_ip_noise_gamma", "ss_debiased_estimation",
    "ss_noise_offset_random_strength", "ss_ip_noise_gamma_random_strength", "ss_loss_type", "ss_huber_schedule",
    "ss_huber_scale", "ss_huber_c", "ss_fp8_base", "ss_fp8_base_unet", "ss_resize_interpolation",
    # folder-run block
    "ss_batch_size_per_device", "ss_total_batch_size", "ss_resolution", "ss_color_aug", "ss_flip_aug",
    "ss_random_crop", "ss_shuffle_caption", "ss_enable_bucket", "ss_bucket_no_upscale", "ss_min_bucket_reso",
    "ss_max_bucket_reso", "ss_keep_tokens", "ss_dataset_dirs", "ss_reg_dataset_dirs", "ss_tag_frequency",
    "ss_bucket_info",
    # network args, model, save time
    "ss_network_args", "ss_sd_model_name", "ss_sd_model_hash", "ss_new_sd_model_hash", "ss_training_finished_at",
    "ss_steps", "ss_epoch",
}


def _metadata(path):
    with safe_open(path, "pt") as f:
        return f.metadata()


def test_folder_run_has_every_kohya_key_and_modelspec_1_0_1(tiny_ckpt, demo_data, tmp_path):
    thumb = tmp_path / "thumb.png"
    thumb.write_bytes(b"\x89PNG fake bytes")
    values = base_values(tiny_ckpt("sd1"), demo_data, tmp_path / "out", max_train_steps=1, reg_data_dir=str(demo_data / "reg"),
                         network_args=["conv_dim=4"], gradient_accumulation_steps=2, clip_skip=2, min_timestep=100,
                         metadata_title="My LoRA", metadata_trigger_phrase="sks shape", metadata_usage_hint="weight 0.8",
                         metadata_thumbnail=str(thumb), metadata_is_negative_embedding="false", training_comment="hi")
    md = _metadata(train(namespace_from(values)).lora)
    assert len(KOHYA_FOLDER_RUN_KEYS) == 84
    assert KOHYA_FOLDER_RUN_KEYS <= set(md), sorted(KOHYA_FOLDER_RUN_KEYS - set(md))
    assert {"sshs_model_hash", "sshs_legacy_hash"} <= set(md)
    assert json.loads(md["ss_dataset_dirs"]) == {"10_sks shape": {"n_repeats": 10, "img_count": 8}}
    assert json.loads(md["ss_reg_dataset_dirs"]) == {"1_shape": {"n_repeats": 1, "img_count": 8}}
    assert md["ss_batch_size_per_device"] == "2" and md["ss_total_batch_size"] == "4"
    assert md["ss_network_args"] == json.dumps({"conv_dim": "4"}) and md["ss_huber_c"] == "0.1"
    assert md["modelspec.sai_model_spec"] == "1.0.1"
    assert md["modelspec.title"] == "My LoRA"
    assert md["modelspec.timestep_range"] == "100,1000" and md["modelspec.encoder_layer"] == "2"
    assert md["modelspec.implementation_version"].startswith("lorasmith/")
    assert md["modelspec.trigger_phrase"] == "sks shape" and md["modelspec.usage_hint"] == "weight 0.8"
    assert md["modelspec.is_negative_embedding"] == "false"
    assert md["modelspec.thumbnail"] == "data:image/png;base64," + base64.b64encode(thumb.read_bytes()).decode()


def test_dataset_config_run_writes_ss_datasets(tiny_ckpt, demo_data, tmp_path):
    config = tmp_path / "data.toml"
    config.write_text(f"""
[general]
caption_extension = ".txt"
[[datasets]]
resolution = 64
batch_size = 2
  [[datasets.subsets]]
  image_dir = '{demo_data / "img" / "10_sks shape"}'
  num_repeats = 2
  class_tokens = "sks shape"
  flip_aug = true
  [[datasets.subsets]]
  image_dir = '{demo_data / "reg" / "1_shape"}'
  is_reg = true
""", encoding="utf-8")
    values = base_values(tiny_ckpt("sd1"), demo_data, tmp_path / "out", max_train_steps=1, dataset_config=str(config))
    del values["train_data_dir"], values["resolution"]
    md = _metadata(train(namespace_from(values)).lora)
    (dataset,) = json.loads(md["ss_datasets"])
    assert dataset["is_dreambooth"] is True and dataset["batch_size_per_device"] == 2
    assert dataset["resolution"] == [64, 64] and dataset["num_train_images"] == 16
    train_subset, reg_subset = dataset["subsets"]
    assert (train_subset["image_dir"], train_subset["num_repeats"], train_subset["img_count"]) == ("10_sks shape", 2, 8)
    assert train_subset["flip_aug"] is True and train_subset["class_tokens"] == "sks shape" and reg_subset["is_reg"] is True
    assert json.loads(md["ss_dataset_dirs"]) == {"10_sks shape": {"n_repeats": 2, "img_count": 8}}  # reg left out
    assert set(json.loads(md["ss_tag_frequency"])) == {"10_sks shape", "1_shape"}
    assert "ss_batch_size_per_device" not in md and "ss_reg_dataset_dirs" not in md  # folder-run keys only


def test_no_metadata_keeps_kohyas_minimum_keys(tiny_ckpt, demo_data, tmp_path):
    values = base_values(tiny_ckpt("sd1"), demo_data, tmp_path / "out", max_train_steps=1, no_metadata=True,
                         network_args=["conv_dim=4"])
    md = _metadata(train(namespace_from(values)).lora)
    ss = {k for k in md if k.startswith("ss_")}  # sshs_* file hashes are written by save_weights, as kohya's
    assert ss == {"ss_v2", "ss_base_model_version", "ss_network_module", "ss_network_dim", "ss_network_alpha",
                  "ss_network_args"}
    assert md["ss_base_model_version"] == "sd_v1" and md["modelspec.sai_model_spec"] == "1.0.1"
