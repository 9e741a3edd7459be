"""A rough GPU memory estimate for a LoRA run, before it starts: what the Configure page shows.

Why: "will this fit on my card?" is the question users ask most before a run; kohya answers it with
an out-of-memory error minutes in. The estimate adds up

- the frozen base model (UNet + text encoders, + the VAE unless latents are cached) in the weight dtype,
- the LoRA: parameters, gradients and optimizer state in fp32 (the rank times the in+out features of
  every layer kohya's LoRA targets: the UNet's transformer blocks, the text encoders' attention and MLP),
- activations of the UNet's forward/backward pass: per latent pixel and image, by family, scaled by
  the UNet's size for unusual models, divided by about 6 with gradient checkpointing,
- a fixed allowance for the CUDA context and allocator.

Parameter counts come from the checkpoint's safetensors header (no weights are read). The activation
figures are calibrated on commonly reported runs (SD1.5 at 512, batch 1, fp16: about 4.5 GB; SDXL at
1024: about 24 GB without checkpointing); treat the total as +-30 %, not a guarantee.
"""

from __future__ import annotations

import math
from pathlib import Path

from library.errors import UserError

GIB = 1024 ** 3
# activation bytes per latent pixel per image at 16-bit precision, no checkpointing; the reference UNet size
ACTIVATION_BYTES = {"sd1": (1.1e6, 859.5e6), "sd2": (1.1e6, 865.9e6), "sdxl": (1.5e6, 2567.5e6)}
CHECKPOINTING_FACTOR = 1 / 6
CUDA_OVERHEAD = 0.6 * GIB
# optimizer state bytes per trained parameter (fp32 LoRA weights)
OPTIMIZER_STATE = {"adamw": 8, "adam": 8, "adamw8bit": 2, "pagedadamw8bit": 2, "adamw8bitao": 2, "lion": 4, "lion8bit": 1,
                   "pagedlion8bit": 1, "sgdnesterov": 4, "sgdnesterov8bit": 1, "sgd": 4, "adafactor": 4, "prodigy": 16,
                   "dadaptation": 12, "dadaptadam": 12, "dadaptlion": 8, "came": 8, "schedulefree": 8, "adamwschedulefree": 8}
_TE_TARGETS = ("q_proj.weight", "k_proj.weight", "v_proj.weight", "out_proj.weight", "fc1.weight", "fc2.weight",
               "c_fc.weight", "c_proj.weight", "in_proj_weight")
_UNET_TARGETS = ("proj_in.weight", "proj_out.weight")
_NOT_WEIGHTS = ("logit_scale", "position_ids")  # a scalar and a buffer that the loaded model does not train or keep


def _shapes(path: Path) -> dict[str, tuple[int, ...]]:
    from library.safetensors_header import SafetensorsFormatError, read_header

    try:
        entries = read_header(path).entries
    except (OSError, SafetensorsFormatError) as e:
        raise UserError(f"{path}: cannot read the safetensors header for the memory estimate ({e})") from None
    return {k: tuple(int(d) for d in v.get("shape", ())) for k, v in entries.items() if isinstance(v, dict)}


def _lora_params_per_rank(key: str, shape: tuple[int, ...]) -> int:
    """in+out features of one targeted layer (OpenCLIP's fused q/k/v counts as three d->d layers)."""
    if key.endswith("in_proj_weight"):
        return 3 * 2 * shape[1]
    if len(shape) == 2 or (len(shape) == 4 and shape[2:] == (1, 1)):
        return shape[0] + shape[1]
    return 0


def count_parameters(path: str | Path) -> dict:
    """{family, unet, text_encoders, vae, lora_unet_per_rank, lora_te_per_rank} from a single-file checkpoint."""
    from library.models.layout import TEXT_ENCODER_LAYOUTS, UNET_PREFIX

    path = Path(path)
    if path.suffix != ".safetensors" or not path.is_file():
        raise UserError(f"{path}: the memory estimate reads single-file .safetensors checkpoints; "
                        "it has no estimate for this model")
    shapes = _shapes(path)
    families = [f for f, layouts in TEXT_ENCODER_LAYOUTS.items() if any(k.startswith(layouts[-1][0]) for k in shapes)]
    if len(families) != 1:
        raise UserError(f"{path}: not an SD1/SD2/SDXL checkpoint the memory estimate knows")
    family = families[0]
    te_prefixes = tuple(p for p, _ in TEXT_ENCODER_LAYOUTS[family])
    out = {"family": family, "unet": 0, "text_encoders": 0, "vae": 0, "lora_unet_per_rank": 0, "lora_te_per_rank": 0}
    for key, shape in shapes.items():
        if key.endswith(_NOT_WEIGHTS):
            continue
        n = math.prod(shape)
        if key.startswith(UNET_PREFIX):
            out["unet"] += n
            if "transformer_blocks" in key or key.endswith(_UNET_TARGETS):
                out["lora_unet_per_rank"] += _lora_params_per_rank(key, shape) if key.endswith("weight") else 0
        elif key.startswith(te_prefixes):
            out["text_encoders"] += n
            if key.endswith(_TE_TARGETS):
                out["lora_te_per_rank"] += _lora_params_per_rank(key, shape)
        elif key.startswith("first_stage_model."):
            out["vae"] += n
    return out


def _resolution(value) -> tuple[int, int]:
    if isinstance(value, (list, tuple)):
        return int(value[0]), int(value[-1])
    parts = [int(p) for p in str(value or 512).replace("x", ",").split(",") if p.strip()]
    return parts[0], parts[-1]


def estimate(values: dict) -> dict:
    """GPU bytes a run of these option values needs, by part, and the total (see the module docstring)."""
    counts = count_parameters(values["pretrained_model_name_or_path"])
    precision = values.get("mixed_precision") or "no"
    weight_bytes = 2 if precision in ("fp16", "bf16") or values.get("full_fp16") or values.get("full_bf16") else 4
    dim = int(values.get("network_dim") or 4)
    unet_only = bool(values.get("network_train_unet_only"))
    te_only = bool(values.get("network_train_text_encoder_only"))
    lora = dim * ((0 if te_only else counts["lora_unet_per_rank"]) + (0 if unet_only else counts["lora_te_per_rank"]))
    optimizer = str(values.get("optimizer_type") or "AdamW").rsplit(".", 1)[-1].lower()
    state_bytes = OPTIMIZER_STATE.get(optimizer, 8)
    w, h = _resolution(values.get("resolution"))
    batch = int(values.get("train_batch_size") or 1)
    per_px, reference = ACTIVATION_BYTES[counts["family"]]
    scale = math.sqrt(max(counts["unet"], 1) / reference) * (weight_bytes / 2)
    activations = per_px * scale * (w // 8) * (h // 8) * batch
    if values.get("gradient_checkpointing"):
        activations *= CHECKPOINTING_FACTOR
    frozen = counts["unet"] + counts["text_encoders"] + (0 if values.get("cache_latents") else counts["vae"])
    parts = {"model weights": frozen * weight_bytes, "LoRA weights + gradients": lora * 8,
             "optimizer state": lora * state_bytes, "activations": activations, "CUDA context": CUDA_OVERHEAD}
    parts = {k: int(v) for k, v in parts.items()}
    total = sum(parts.values())
    return {"family": counts["family"], "lora_parameters": lora, "base_parameters": counts["unet"] + counts["text_encoders"] + counts["vae"],
            "parts": parts, "total_bytes": total, "total_gib": round(total / GIB, 2),
            "optimizer_state_bytes_per_parameter": state_bytes, "resolution": [w, h], "batch": batch}
