"""One training forward: batch -> latents, conditioning, noise -> UNet prediction -> loss.

Why a pure function: the loop, the loss-falls test (fixed noise on a fixed batch) and benchmarks
all call the same code. Noise, timesteps and latent sampling draw from the generator passed in; the
LoRA modules' dropout draws from torch's global RNG, which the loop re-seeds before every micro-batch
(``loop.step_seed``). So a step is a function of (weights, batch, seed) alone — what makes resume
bit-identical — as long as the caller seeds both.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

from library.options.typed import from_args
from library.train.losses import LossOptions, per_sample_loss, target_for
from library.train.noise import NoiseOptions, noise_noisy_latents_and_timesteps
from library.inference.text_encoding import Conditioning, encode_captions
from library.train.text_encoding import sdxl_time_ids


@dataclass
class StepConfig:
    """What the step needs besides the model: noise/loss options and text settings."""

    noise: NoiseOptions
    loss: LossOptions
    clip_skip: int | None = None
    max_token_length: int | None = None
    weighted_captions: bool = False  # (word:1.2) caption weights (library/inference/prompt_weights.py)
    autocast: object = contextlib.nullcontext  # a callable returning a context manager


def noise_options(args, num_train_timesteps: int = 1000) -> NoiseOptions:
    """The noise options of a run, timesteps resolved against the model's schedule."""
    return from_args(NoiseOptions, args, min_timestep=args.min_timestep or 0,
                     max_timestep=args.max_timestep if args.max_timestep is not None else num_train_timesteps)


def loss_options(args, v_parameterization: bool) -> LossOptions:
    """The loss options of a run, with the model's own prediction type."""
    return from_args(LossOptions, args, v_parameterization=v_parameterization)


def batch_latents(model, batch: dict, generator: torch.Generator | None) -> torch.Tensor:
    """Scaled latents of the batch: from the cache, or through the frozen VAE now."""
    base = model.base
    if batch.get("latents") is not None:
        latents = batch["latents"].to(model.device, torch.float32)
    else:
        with torch.no_grad():
            pixels = batch["images"].to(model.device, model.vae_dtype)
            dist = base.vae.encode(pixels).latent_dist
            latents = dist.sample(generator=generator).float()
    return latents * base.vae_scale_factor


def batch_conditioning(model, batch: dict, cfg: StepConfig) -> Conditioning:
    """UNet conditioning: cached text-encoder outputs, or the text encoders run now (with grad if trained)."""
    cached = batch.get("text_encoder_outputs")
    if cached is not None:
        return Conditioning(cached["context"].to(model.device), cached.get("pooled").to(model.device) if "pooled" in cached else None)
    grad = torch.enable_grad() if model.train_text_encoder and torch.is_grad_enabled() else torch.no_grad()
    with grad, cfg.autocast():
        return encode_captions(model.base, batch["captions"], cfg.max_token_length, cfg.clip_skip, cfg.weighted_captions,
                               device=model.device)


def batch_loss(model, batch: dict, cfg: StepConfig, generator: torch.Generator | None,
               timesteps: torch.Tensor | None = None, items: list | None = None) -> torch.Tensor:
    """The scalar loss of one batch (float32), every random draw from ``generator``; ``timesteps`` fixes them (validation).
    ``items``, when given, receives the per-image losses (detached) whose mean this is."""
    per_item = batch_item_losses(model, batch, cfg, generator, timesteps)
    if items is not None:
        items.append(per_item.detach())
    return per_item.mean()


def batch_item_losses(model, batch: dict, cfg: StepConfig, generator: torch.Generator | None,
                      timesteps: torch.Tensor | None = None) -> torch.Tensor:
    """The loss of each image of a batch (B values, float32); their mean is ``batch_loss``. The trainer logs
    them per image (run folder ``item_losses.jsonl``) to find outlier images."""
    base = model.base
    latents = batch_latents(model, batch, generator)
    cond = batch_conditioning(model, batch, cfg)
    noise, noisy, timesteps = noise_noisy_latents_and_timesteps(base.noise_scheduler, latents, cfg.noise, generator, timesteps)
    added = None
    if base.is_sdxl:
        time_ids = sdxl_time_ids(
            batch["original_sizes_hw"].tolist(), batch["crop_top_lefts"].tolist(), batch["target_sizes_hw"].tolist(),
            device=model.device, dtype=model.weight_dtype,
        )
        added = {"text_embeds": cond.pooled.to(model.weight_dtype), "time_ids": time_ids}
    with cfg.autocast():
        pred = base.unet(
            noisy.to(model.weight_dtype), timesteps, cond.context.to(model.weight_dtype), added_cond_kwargs=added
        ).sample
    target = target_for(base.noise_scheduler, latents, noise, timesteps, cfg.loss.prediction_type)
    mask = batch.get("masks")  # --masked_loss: kohya's apply_masked_loss, area-resized to the latents in losses.py
    return per_sample_loss(pred.float(), target.float(), timesteps, base.noise_scheduler, cfg.loss,
                           batch["loss_weights"].to(model.device), mask.to(model.device) if mask is not None else None)
