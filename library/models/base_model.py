"""The loaded base model: networks, tokenizers, noise schedule and the facts training needs."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel

from library.errors import UserError
from library.models.build import Components
from library.models.tokenizers import tokenizers_from_configs
from library.vocabulary import base_model_version


@dataclass
class BaseModel:
    """An SD1/SD2/SDXL model ready to train on.

    ``text_encoders``/``tokenizers`` have one entry (SD1/SD2) or two (SDXL: CLIP-L, bigG).
    ``vae_scale_factor`` is the latent multiplier (0.18215 or 0.13025, kohya's name);
    ``latent_downscale`` is the spatial factor between pixels and latents (8).
    ``extras`` holds original-layout tensors the networks do not use but the file had
    (SD2's last OpenCLIP block, ``text_projection``, ``logit_scale``); the saver writes
    them back so a saved file is what A1111/ComfyUI expect.
    ``content_hash`` is hashes.content_key of the source: the cache key for latents
    and text-encoder outputs.
    """

    family: str
    unet: UNet2DConditionModel
    vae: AutoencoderKL
    text_encoders: list
    tokenizers: list
    noise_scheduler: DDPMScheduler
    prediction_type: str
    vae_scale_factor: float
    configs: dict
    source: str = ""
    content_hash: str = ""
    extras: dict[str, torch.Tensor] = field(default_factory=dict)
    metadata: dict[str, str] = field(default_factory=dict)

    @property
    def is_sdxl(self) -> bool:
        return self.family == "sdxl"

    @property
    def v_parameterization(self) -> bool:
        return self.prediction_type == "v_prediction"

    @property
    def latent_downscale(self) -> int:
        return 2 ** (len(self.configs["vae"]["block_out_channels"]) - 1)

    def check_clip_skip(self, clip_skip: int | None, option: str = "--clip_skip") -> None:
        """Refuse a clip skip deeper than the text encoder, before any work (it would fail at the
        first caption with an IndexError). SDXL always uses the penultimate layer and ignores it."""
        if clip_skip is None or self.is_sdxl:
            return
        layers = self.text_encoders[0].config.num_hidden_layers
        if not 1 <= clip_skip <= layers:
            raise UserError(f"{option} {clip_skip}: this model's text encoder has {layers} layers; use 1 to {layers} "
                            "(2 = the penultimate layer, kohya's usual setting)")

    @property
    def model_version(self) -> str:
        """kohya's ``ss_base_model_version``: sd_v1, sd_v2, sd_v2_v, sdxl_base_v1-0."""
        return base_model_version(self.family, self.v_parameterization)


def assemble(
    configs: dict,
    components: Components,
    *,
    tokenizers: list | None = None,
    source: str = "",
    content_hash: str = "",
    extras: dict[str, torch.Tensor] | None = None,
    metadata: dict[str, str] | None = None,
) -> BaseModel:
    """A BaseModel from built networks; the noise schedule and tokenizers come from ``configs``."""
    scheduler = DDPMScheduler(**configs["scheduler"])
    return BaseModel(
        family=configs["family"],
        unet=components.unet,
        vae=components.vae,
        text_encoders=list(components.text_encoders),
        tokenizers=tokenizers if tokenizers is not None else tokenizers_from_configs(configs["tokenizers"]),
        noise_scheduler=scheduler,
        prediction_type=scheduler.config.prediction_type,
        vae_scale_factor=float(configs["vae"].get("scaling_factor", 0.18215)),
        configs=configs,
        source=source,
        content_hash=content_hash,
        extras=dict(extras or {}),
        metadata=dict(metadata or {}),
    )
