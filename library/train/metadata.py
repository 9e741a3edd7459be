"""The ``ss_*`` metadata of a trained LoRA file: the run's settings, data and base model.

The network keys, the modelspec and the value formats are the LoRA file format's
(networks/lora_format.py), shared with merge, resize, extract and convert. A1111 shows these in its
LoRA info page and uses ``ss_output_name`` as alias and ``ss_base_model_version`` (``sdxl_*``) to tell
SDXL LoRAs apart; kohya's GUI tools read the rest. All values are strings (safetensors metadata is str -> str).
"""

from __future__ import annotations

import os
import time
import uuid

from networks.lora_format import (IMPLEMENTATION_VERSION, keep_minimum, metadata_value, minimum_network_metadata,
                                  modelspec)


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
    """The fixed part of the metadata, computed once when training starts: every ``ss_*`` key kohya's
    train_network.py writes (ss_validation_* aside), folder runs and ``--dataset_config`` runs alike.
    ``base_sha256``: the base file's sha256 when already known (see model_file_hashes). The network keys
    and the modelspec are the LoRA file format's (networks/lora_format.py), as every tool writes them."""
    res = data_summary.get("resolution") or (512, 512)
    md = {
        "ss_session_id": str(uuid.uuid4().int % 2**31),
        "ss_training_started_at": str(time.time()),
        "ss_output_name": args.output_name,
        "ss_sd_scripts_commit_hash": IMPLEMENTATION_VERSION,  # kohya writes its git commit; we name our build
        "ss_optimizer": optimizer_description,
        "ss_training_comment": args.training_comment,
        **_schedule_keys(args, data_summary),
        **_noise_and_loss_keys(args),
        **_validation_keys(args, data_summary),
    }
    datasets = data_summary.get("datasets") or []
    if args.dataset_config:
        md.update(_dataset_config_keys(datasets))
    else:
        md.update(_folder_run_keys(args, datasets[0] if datasets else {}, data_summary, res))
    md.update(_base_model_keys(args, model, base_sha256))
    md = {k: metadata_value(v) for k, v in md.items()}
    md.update(minimum_network_metadata(model.family, model.model_version, args.network_module, args.network_dim,
                                       args.network_alpha, network_args or None))
    md.update(modelspec(model.family, model.v_parameterization, args.output_name, res, args))
    return md


def _schedule_keys(args, summary: dict) -> dict:
    """Learning rates, step counts, precision and memory settings of the run."""
    return {
        "ss_learning_rate": args.learning_rate,
        "ss_text_encoder_lr": _first_lr(args.text_encoder_lr),
        "ss_unet_lr": args.unet_lr,
        "ss_num_train_images": summary.get("num_train_images", 0),
        "ss_num_reg_images": summary.get("num_reg_images", 0),
        "ss_num_batches_per_epoch": summary.get("num_batches_per_epoch", 0),
        "ss_num_epochs": summary.get("num_epochs", 0),
        "ss_gradient_checkpointing": bool(args.gradient_checkpointing),
        "ss_gradient_accumulation_steps": args.gradient_accumulation_steps,
        "ss_max_train_steps": summary.get("max_train_steps", 0),
        "ss_lr_warmup_steps": args.lr_warmup_steps,
        "ss_lr_scheduler": args.lr_scheduler,
        "ss_network_dropout": args.network_dropout,
        "ss_mixed_precision": args.mixed_precision,
        "ss_full_fp16": bool(getattr(args, "full_fp16", False)),
        "ss_clip_skip": args.clip_skip,
        "ss_max_token_length": args.max_token_length,
        "ss_cache_latents": bool(args.cache_latents),
        "ss_seed": args.seed,
        "ss_lowram": bool(args.lowram),
        "ss_max_grad_norm": args.max_grad_norm,
        "ss_scale_weight_norms": args.scale_weight_norms,
        "ss_fp8_base": bool(args.fp8_base),
        "ss_fp8_base_unet": bool(args.fp8_base_unet),
        "ss_resize_interpolation": args.resize_interpolation,
    }


def _noise_and_loss_keys(args) -> dict:
    """Noise, caption dropout and loss settings."""
    return {
        "ss_noise_offset": args.noise_offset,
        "ss_multires_noise_iterations": args.multires_noise_iterations,
        "ss_multires_noise_discount": args.multires_noise_discount,
        "ss_adaptive_noise_scale": args.adaptive_noise_scale,
        "ss_zero_terminal_snr": bool(args.zero_terminal_snr),
        "ss_caption_dropout_rate": args.caption_dropout_rate,
        "ss_caption_dropout_every_n_epochs": args.caption_dropout_every_n_epochs,
        "ss_caption_tag_dropout_rate": args.caption_tag_dropout_rate,
        "ss_face_crop_aug_range": args.face_crop_aug_range,
        "ss_prior_loss_weight": args.prior_loss_weight,
        "ss_min_snr_gamma": args.min_snr_gamma,
        "ss_ip_noise_gamma": args.ip_noise_gamma,
        "ss_debiased_estimation": bool(args.debiased_estimation_loss),
        "ss_noise_offset_random_strength": bool(args.noise_offset_random_strength),
        "ss_ip_noise_gamma_random_strength": bool(args.ip_noise_gamma_random_strength),
        "ss_loss_type": args.loss_type,
        "ss_huber_schedule": args.huber_schedule,
        "ss_huber_scale": args.huber_scale,
        "ss_huber_c": args.huber_c,
    }


def _validation_keys(args, summary: dict) -> dict:
    return {
        "ss_validation_seed": args.validation_seed,
        "ss_validation_split": args.validation_split,
        "ss_max_validation_steps": args.max_validation_steps,
        "ss_validate_every_n_steps": args.validate_every_n_steps,
        "ss_validate_every_n_epochs": args.validate_every_n_epochs,
        "ss_num_validation_images": summary.get("num_validation_images", 0),
    }


def _base_model_keys(args, model, base_sha256: str | None) -> dict:
    """Names and hashes of the base model and VAE, so a LoRA can be matched to its base."""
    md = {"ss_sd_model_name": os.path.basename(str(args.pretrained_model_name_or_path))}
    md["ss_sd_model_hash"], md["ss_new_sd_model_hash"] = model_file_hashes(getattr(model, "source", ""), base_sha256)
    if args.vae:
        md["ss_vae_name"] = os.path.basename(os.path.normpath(str(args.vae)))
        md["ss_vae_hash"], md["ss_new_vae_hash"] = model_file_hashes(args.vae)
    return md


def _first_lr(value):
    """kohya stores the text-encoder learning rate as one number (the first of the list)."""
    if isinstance(value, (list, tuple)):
        return value[0] if len(value) == 1 else (list(value) or None)
    return value


def _dirs(subsets, reg: bool) -> dict:
    return {s["name"]: {"n_repeats": s["num_repeats"], "img_count": s["img_count"]}
            for s in subsets if s.get("is_reg", False) == reg}


def _folder_run_keys(args, dataset: dict, summary: dict, res) -> dict:
    """kohya's keys for a --train_data_dir/--reg_data_dir run (one dataset)."""
    subsets = dataset.get("subsets", [])
    return {
        "ss_batch_size_per_device": args.train_batch_size,
        "ss_total_batch_size": args.train_batch_size * summary.get("num_processes", 1) * args.gradient_accumulation_steps,
        "ss_resolution": f"({res[0]}, {res[1]})",
        "ss_color_aug": bool(args.color_aug),
        "ss_flip_aug": bool(args.flip_aug),
        "ss_random_crop": bool(args.random_crop),
        "ss_shuffle_caption": bool(args.shuffle_caption),
        "ss_enable_bucket": bool(dataset.get("enable_bucket", args.enable_bucket)),
        "ss_bucket_no_upscale": bool(dataset.get("bucket_no_upscale", args.bucket_no_upscale)),
        "ss_min_bucket_reso": dataset.get("min_bucket_reso", args.min_bucket_reso),
        "ss_max_bucket_reso": dataset.get("max_bucket_reso", args.max_bucket_reso),
        "ss_keep_tokens": args.keep_tokens,
        "ss_dataset_dirs": _dirs(subsets, reg=False),
        "ss_reg_dataset_dirs": _dirs(subsets, reg=True),
        "ss_tag_frequency": dataset.get("tag_frequency", {}),
        "ss_bucket_info": dataset.get("bucket_info"),
    }


_DATASET_FIELDS = ("is_dreambooth", "batch_size_per_device", "num_train_images", "num_reg_images", "resolution",
                   "enable_bucket", "min_bucket_reso", "max_bucket_reso", "tag_frequency", "bucket_info")
_SUBSET_DROP = ("name",)


def _dataset_config_keys(datasets: list) -> dict:
    """kohya's ss_datasets (one JSON entry per [[datasets]]) with merged tag frequency and (non-reg) dirs."""
    entries, tags, dirs = [], {}, {}
    for ds in datasets:
        entry = {k: ds.get(k) for k in _DATASET_FIELDS}
        entry["resolution"] = list(ds["resolution"]) if ds.get("resolution") else None
        entry["resize_interpolation"] = None
        subsets = []
        for sub in ds.get("subsets", []):
            item = {k: v for k, v in sub.items() if k not in _SUBSET_DROP}
            if not ds.get("is_dreambooth", True):
                item.pop("is_reg", None)
            subsets.append(item)
            if not sub.get("is_reg"):
                name, n = sub["name"], 2
                while name in dirs:  # the same folder in two datasets: "dir (2)", as kohya
                    name, n = f"{sub['name']} ({n})", n + 1
                dirs[name] = {"n_repeats": sub["num_repeats"], "img_count": sub["img_count"]}
        entry["subsets"] = subsets
        entries.append(entry)
        for folder, freq in (ds.get("tag_frequency") or {}).items():
            tags.setdefault(folder, freq)  # a folder used by several datasets counts once
    return {"ss_datasets": entries, "ss_tag_frequency": tags, "ss_dataset_dirs": dirs}


def checkpoint_metadata(base: dict[str, str], epoch: int, step: int, title: str,
                        no_metadata: bool = False) -> dict[str, str]:
    """The metadata for one saved file: the fixed part plus progress at this point (kohya stamps
    ``ss_training_finished_at`` on every save). ``title``: ``--metadata_title``, else the file's stem.
    ``no_metadata``: only kohya's minimum keys and the modelspec."""
    md = dict(base)
    md["ss_epoch"] = str(epoch)
    md["ss_steps"] = str(step)
    md["ss_training_finished_at"] = str(time.time())
    md["modelspec.title"] = title
    return keep_minimum(md) if no_metadata else md
