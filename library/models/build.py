"""Build UNet / VAE / text encoders from a ``configs`` dict (see configs.py).

Three ways, for three users: ``device="meta"`` (no memory at all; module counting on
full-size models), ``device="cpu"`` with a seed (random tiny models for tests), and
:func:`build_empty` for loading, where parameters stay on the meta device until the
checkpoint's tensors are assigned (no time wasted on random init).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from accelerate import init_empty_weights
from diffusers import AutoencoderKL, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

TEXT_ENCODER_CLASSES = {"CLIPTextModel": CLIPTextModel, "CLIPTextModelWithProjection": CLIPTextModelWithProjection}

# The CLIPTextConfig fields that decide the architecture and pooling; all we store.
CLIP_CONFIG_KEYS = (
    "vocab_size", "hidden_size", "intermediate_size", "projection_dim", "num_hidden_layers",
    "num_attention_heads", "max_position_embeddings", "hidden_act", "layer_norm_eps",
    "bos_token_id", "eos_token_id", "pad_token_id",
)


@dataclass
class Components:
    """The trainable networks of one SD model."""

    unet: UNet2DConditionModel
    vae: AutoencoderKL
    text_encoders: list


def clip_config(te: dict) -> CLIPTextConfig:
    """A text-encoder entry of ``configs["text_encoders"]`` -> CLIPTextConfig."""
    return CLIPTextConfig(**te["config"])


def clip_config_dict(config: CLIPTextConfig) -> dict:
    """The architecture fields of a CLIPTextConfig, JSON-ready."""
    d = config.to_dict()
    return {k: d[k] for k in CLIP_CONFIG_KEYS if k in d and d[k] is not None}


def diffusers_config_dict(config) -> dict:
    """A diffusers model config without its private ``_`` entries, JSON-ready."""
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in dict(config).items() if not k.startswith("_")}


def _construct(configs: dict) -> Components:
    unet = UNet2DConditionModel.from_config(configs["unet"])
    vae = AutoencoderKL.from_config(configs["vae"])
    tes = [TEXT_ENCODER_CLASSES[te["class"]](clip_config(te)) for te in configs["text_encoders"]]
    return Components(unet, vae, tes)


def _eval(c: Components) -> Components:
    for m in (c.unet, c.vae, *c.text_encoders):
        m.eval()
    return c


def build_models(configs: dict, device: str | torch.device = "meta", seed: int | None = None) -> Components:
    """Build every network of ``configs``; on "meta" nothing is allocated.

    With ``seed`` the random init is reproducible and the global RNG is left as it was.
    """
    device = torch.device(device)
    if device.type == "meta":
        with torch.device("meta"):
            return _eval(_construct(configs))
    with torch.random.fork_rng(devices=[]):
        if seed is not None:
            torch.manual_seed(seed)
        c = _construct(configs)
    c = Components(c.unet.to(device), c.vae.to(device), [te.to(device) for te in c.text_encoders])
    return _eval(c)


def build_empty(configs: dict) -> Components:
    """Networks whose parameters are on the meta device (buffers real), ready for ``assign``."""
    with init_empty_weights(include_buffers=False):
        return _eval(_construct(configs))
