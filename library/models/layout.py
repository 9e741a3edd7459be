"""Where each model part lives in an original single-file checkpoint, per family.

A checkpoint is one flat dict; every part (UNet, VAE, each text encoder) owns a key
prefix and a key converter with the same four methods: ``classify(key)`` (map / extra /
ignore), ``from_original(key, tensor)`` -> [(model key, tensor)], ``to_original(sd)``
and ``original_key(model_key)`` (for error messages).
The UNet part reuses library/models/unet_layout, the single diffusers<->original UNet map.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from library.models.errors import UnmappedKey
from library.models.keys_clip import IGNORE, MAP, HFClipKeys, OpenClipKeys
from library.models.keys_vae import vae_from_original, vae_key_to_original, vae_to_original
from library.models.unet_layout import UNetLayout, UnknownModulePath, from_compvis, to_compvis

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."

# Text-encoder prefix and key layout per family, in text_encoders order.
TEXT_ENCODER_LAYOUTS = {
    "sd1": [("cond_stage_model.transformer.", "hf")],
    "sd2": [("cond_stage_model.model.", "openclip")],
    "sdxl": [("conditioner.embedders.0.transformer.", "hf"), ("conditioner.embedders.1.model.", "openclip")],
}
SDXL_REFINER_PREFIX = "conditioner.embedders.0.model."

# Top-level keys of LDM/SGM training checkpoints that are not model weights: the DDPM
# schedule buffers, EMA copies, and the SGM denoiser's sigma table.
IGNORED_KEYS = frozenset({
    "betas", "alphas_cumprod", "alphas_cumprod_prev", "sqrt_alphas_cumprod",
    "sqrt_one_minus_alphas_cumprod", "log_one_minus_alphas_cumprod", "sqrt_recip_alphas_cumprod",
    "sqrt_recipm1_alphas_cumprod", "posterior_variance", "posterior_log_variance_clipped",
    "posterior_mean_coef1", "posterior_mean_coef2", "logvar", "lvlb_weights",
})
IGNORED_PREFIXES = ("model_ema.", "denoiser.")

# logit_scale of a trained CLIP is ln(100); written when a file needs the key and we have none.
_DEFAULT_LOGIT_SCALE = math.log(100.0)


class UNetKeys:
    """UNet under ``model.diffusion_model.``: compvis <-> diffusers paths, same tensors."""

    def __init__(self, unet_config: dict):
        self.layout = UNetLayout.from_config(unet_config)

    def classify(self, key: str) -> str:
        return MAP

    def from_original(self, key: str, tensor: torch.Tensor) -> list[tuple[str, torch.Tensor]]:
        try:
            return [(from_compvis(key, self.layout), tensor)]
        except UnknownModulePath:
            raise UnmappedKey(key) from None

    def original_key(self, key: str) -> str:
        return to_compvis(key, self.layout)

    def to_original(self, sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {to_compvis(k, self.layout): v for k, v in sd.items()}


class VAEKeys:
    """VAE under ``first_stage_model.`` (see keys_vae)."""

    def __init__(self, vae_config: dict):
        self.num_levels = len(vae_config["block_out_channels"])

    def classify(self, key: str) -> str:
        # Some LDM training checkpoints keep the VAE's loss (LPIPS, discriminator).
        return IGNORE if key.startswith("loss.") else MAP

    def from_original(self, key: str, tensor: torch.Tensor) -> list[tuple[str, torch.Tensor]]:
        return [vae_from_original(key, tensor, self.num_levels)]

    def original_key(self, key: str) -> str:
        return vae_key_to_original(key, self.num_levels)

    def to_original(self, sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return vae_to_original(sd, self.num_levels)


@dataclass(frozen=True)
class Part:
    """One model inside a checkpoint: its name, key prefix, converter and (for TEs) index."""

    name: str
    prefix: str
    keys: object
    index: int | None = None


def parts_for(configs: dict) -> list[Part]:
    """The parts of a model of ``configs["family"]`` in checkpoint order: UNet, VAE, TEs."""
    family = configs["family"]
    parts = [Part("UNet", UNET_PREFIX, UNetKeys(configs["unet"])), Part("VAE", VAE_PREFIX, VAEKeys(configs["vae"]))]
    for i, ((prefix, kind), te) in enumerate(zip(TEXT_ENCODER_LAYOUTS[family], configs["text_encoders"])):
        has_proj = te["class"] == "CLIPTextModelWithProjection"
        if kind == "hf":
            keys = HFClipKeys(has_proj)
        else:
            keys = OpenClipKeys(te["config"]["num_hidden_layers"], has_proj)
        parts.append(Part(f"text encoder {i + 1}" if family == "sdxl" else "text encoder", prefix, keys, i))
    return parts


def is_ignored_top_level(key: str) -> bool:
    return key in IGNORED_KEYS or key.startswith(IGNORED_PREFIXES)


def fill_missing_extras(configs: dict, sd: dict[str, torch.Tensor]) -> None:
    """Add the OpenCLIP tensors an original file has but our HF models lack, in place.

    A model built from scratch or read from a diffusers folder has no SD2 24th block,
    ``text_projection`` or ``logit_scale``. A1111 builds the full OpenCLIP model and
    ComfyUI reads these keys, so we write stand-ins: the last block repeated (SD never
    uses its output), an identity projection and ln(100). Tensors loaded from a file are
    kept as they were and never replaced.
    """
    family = configs["family"]
    for (prefix, kind), te in zip(TEXT_ENCODER_LAYOUTS[family], configs["text_encoders"]):
        if kind != "openclip":
            continue
        cfg = te["config"]
        n, hidden = cfg["num_hidden_layers"], cfg["hidden_size"]
        ref = sd[f"{prefix}ln_final.weight"]
        if family == "sd2" and not any(k.startswith(f"{prefix}transformer.resblocks.{n}.") for k in sd):
            last = f"{prefix}transformer.resblocks.{n - 1}."
            for k in [k for k in sd if k.startswith(last)]:
                sd[f"{prefix}transformer.resblocks.{n}." + k[len(last):]] = sd[k].clone()
        if f"{prefix}text_projection" not in sd:
            sd[f"{prefix}text_projection"] = torch.eye(hidden, dtype=ref.dtype, device=ref.device)
        if f"{prefix}logit_scale" not in sd:
            sd[f"{prefix}logit_scale"] = torch.tensor(_DEFAULT_LOGIT_SCALE, dtype=ref.dtype, device=ref.device)
