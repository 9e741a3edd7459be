"""The ``ss_*`` and ``modelspec.*`` metadata written into every LoRA file.

A1111 shows these in its LoRA info page and uses ``ss_output_name`` as alias and
``ss_base_model_version`` (``sdxl_*``) to tell SDXL LoRAs apart; kohya's GUI tools read
the rest. All values are strings (safetensors metadata is str -> str).
"""

from __future__ import annotations

import datetime
import json
import os
import time
import uuid

ARCHITECTURES = {
    "sd1": "stable-diffusion-v1",
    "sd2": "stable-diffusion-v2-512",
    "sd2_v": "stable-diffusion-v2-768-v",
    "sdxl": "stable-diffusion-xl-v1-base",
}


def _s(value) -> str:
    if value is None:
        return "None"
    if isinstance(value, (dict, list, tuple)):
        return json.dumps(value)
    return str(value)


def modelspec(family: str, v_parameterization: bool, title: str, resolution, args=None) -> dict[str, str]:
    """Stability AI's model-spec fields for a LoRA adapter."""
    arch = ARCHITECTURES["sd2_v" if family == "sd2" and v_parameterization else family]
    w, h = resolution if isinstance(resolution, (tuple, list)) else (resolution, resolution)
    spec = {
        "modelspec.sai_model_spec": "1.0.0",
        "modelspec.architecture": f"{arch}/lora",
        "modelspec.implementation": "https://github.com/Stability-AI/generative-models" if family == "sdxl" else "diffusers",
        "modelspec.title": title,
        "modelspec.resolution": f"{w}x{h}",
        "modelspec.prediction_type": "v" if v_parameterization else "epsilon",
        "modelspec.date": datetime.datetime.now().replace(microsecond=0).isoformat(),
    }
    for key in ("author", "description", "license", "tags"):
        value = getattr(args, f"metadata_{key}", None) if args is not None else None
        if value:
            spec[f"modelspec.{key}"] = str(value)
    return spec


def model_file_hashes(source: str, sha256: str | None = None) -> tuple[str, str]:
    """kohya's (ss_sd_model_hash, ss_new_sd_model_hash) for a single-file base; empty for a folder.

    The full sha256 (what A1111 shows as the model's AutoV2 hash, so users can match a LoRA to its
    base) reads the whole checkpoint: pass it when already known (training starts it in the
    background, see hashes.start_sha256); else it is read from, or added to, the hash cache.
    """
    if not source or not os.path.isfile(source):
        return "", ""
    from library.models.hashes import a1111_legacy_hash, sha256_file_cached

    return a1111_legacy_hash(source), sha256 or sha256_file_cached(source)


def training_metadata(args, model, data_summary: dict, network_args: dict, optimizer_description: str,
                      base_sha256: str | None = None) -> dict[str, str]:
    """The fixed part of the metadata, computed once when training starts."""
    res = data_summary.get("resolution") or (512, 512)
    legacy_hash, new_hash = model_file_hashes(getattr(model, "source", ""), base_sha256)
    md = {
        "ss_session_id": str(uuid.uuid4().int % 2**31),
        "ss_training_started_at": str(time.time()),
        "ss_output_name": args.output_name,
        "ss_learning_rate": args.learning_rate,
        "ss_text_encoder_lr": args.text_encoder_lr,
        "ss_unet_lr": args.unet_lr,
        "ss_num_train_images": data_summary.get("num_train_images", 0),
        "ss_num_reg_images": data_summary.get("num_reg_images", 0),
        "ss_num_batches_per_epoch": data_summary.get("num_batches_per_epoch", 0),
        "ss_num_epochs": data_summary.get("num_epochs", 0),
        "ss_max_train_steps": data_summary.get("max_train_steps", 0),
        "ss_lr_warmup_steps": args.lr_warmup_steps,
        "ss_lr_scheduler": args.lr_scheduler,
        "ss_network_module": args.network_module,
        "ss_network_dim": args.network_dim,
        "ss_network_alpha": args.network_alpha,
        "ss_network_dropout": args.network_dropout,
        "ss_network_args": network_args or None,
        "ss_mixed_precision": args.mixed_precision,
        "ss_full_fp16": bool(getattr(args, "full_fp16", False)),
        "ss_v2": model.family == "sd2",
        "ss_base_model_version": model.model_version,
        "ss_clip_skip": args.clip_skip,
        "ss_max_token_length": args.max_token_length,
        "ss_seed": args.seed,
        "ss_noise_offset": args.noise_offset,
        "ss_multires_noise_iterations": args.multires_noise_iterations,
        "ss_multires_noise_discount": args.multires_noise_discount,
        "ss_adaptive_noise_scale": args.adaptive_noise_scale,
        "ss_zero_terminal_snr": bool(args.zero_terminal_snr),
        "ss_optimizer": optimizer_description,
        "ss_gradient_checkpointing": bool(args.gradient_checkpointing),
        "ss_gradient_accumulation_steps": args.gradient_accumulation_steps,
        "ss_caption_dropout_rate": args.caption_dropout_rate,
        "ss_caption_dropout_every_n_epochs": args.caption_dropout_every_n_epochs,
        "ss_caption_tag_dropout_rate": args.caption_tag_dropout_rate,
        "ss_prior_loss_weight": args.prior_loss_weight,
        "ss_min_snr_gamma": args.min_snr_gamma,
        "ss_scale_weight_norms": args.scale_weight_norms,
        "ss_ip_noise_gamma": args.ip_noise_gamma,
        "ss_debiased_estimation": bool(args.debiased_estimation_loss),
        "ss_loss_type": args.loss_type,
        "ss_training_comment": getattr(args, "training_comment", None),
        "ss_sd_model_name": os.path.basename(str(args.pretrained_model_name_or_path)),
        "ss_sd_model_hash": legacy_hash,
        "ss_new_sd_model_hash": new_hash,
        "ss_resolution": f"({res[0]}, {res[1]})",
        "ss_enable_bucket": data_summary.get("enable_bucket", False),
        "ss_bucket_info": data_summary.get("bucket_info"),
        "ss_tag_frequency": data_summary.get("tag_frequency"),
        "ss_dataset_dirs": data_summary.get("dataset_dirs"),
        "ss_cache_latents": bool(args.cache_latents),
        "ss_flip_aug": bool(args.flip_aug),
        "ss_color_aug": bool(args.color_aug),
        "ss_keep_tokens": args.keep_tokens,
        "ss_shuffle_caption": bool(args.shuffle_caption),
        "ss_validation_seed": args.validation_seed,
        "ss_validation_split": args.validation_split,
        "ss_max_validation_steps": args.max_validation_steps,
        "ss_validate_every_n_steps": args.validate_every_n_steps,
        "ss_validate_every_n_epochs": args.validate_every_n_epochs,
        "ss_num_validation_images": data_summary.get("num_validation_images", 0),
    }
    md = {k: _s(v) for k, v in md.items()}
    md.update(modelspec(model.family, model.v_parameterization, args.output_name, res, args))
    return md


def checkpoint_metadata(base: dict[str, str], epoch: int, step: int, title: str, final: bool = False) -> dict[str, str]:
    """The metadata for one saved file: the fixed part plus progress at this point."""
    md = dict(base)
    md["ss_epoch"] = str(epoch)
    md["ss_steps"] = str(step)
    md["modelspec.title"] = title
    if final:
        md["ss_training_finished_at"] = str(time.time())
    return md
