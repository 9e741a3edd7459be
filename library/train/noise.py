"""Training noise, timesteps and the noise schedule: pure functions with an explicit RNG.

What the training step draws, in order (kohya's ``get_noise_noisy_latents_and_timesteps``):

1. ``sample_noise``      the noise the model learns to predict (+ offset noise, + pyramid noise);
2. ``sample_timesteps``  one timestep per sample, uniform in ``[min_timestep, max_timestep)``;
3. ``noisy_latents``     the forward diffusion ``scheduler.add_noise``, with optional input perturbation.

RNG contract (reproducible and resumable on CPU under a seed):

* Every random draw comes from the ``generator`` argument. With ``generator=None`` it comes from torch's
  global CPU generator (the one ``torch.manual_seed`` seeds); no function here ever touches Python's
  ``random`` or numpy.
* Draws are made *on the generator's device* (CPU for ``None``) in float32 and then moved to the latents'
  device and dtype. So a CPU generator gives bit-identical noise whether the model runs on CPU or GPU,
  and saving ``generator.get_state()`` (or ``torch.get_rng_state()``) in a checkpoint is all a resume
  needs to continue the exact same stream.
* Each function documents the draws it makes, in order. The number of draws depends only on the
  options and the tensor shapes, never on data values.

The SNR helpers at the end compute SNR from the scheduler's *current* ``alphas_cumprod`` every time, so
they cannot go stale after ``apply_zero_terminal_snr`` (kohya caches its table before rescaling).
"""

from __future__ import annotations

import dataclasses
from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from diffusers.schedulers.scheduling_ddpm import rescale_zero_terminal_snr

from library.options.definitions import BY_NAME
from library.options.typed import typed_config
from library.options.validate import check_noise_and_loss

__all__ = [
    "NoiseOptions",
    "sample_noise",
    "sample_timesteps",
    "noisy_latents",
    "noise_noisy_latents_and_timesteps",
    "apply_zero_terminal_snr",
    "prepare_scheduler_for_snr",
    "snr_table",
    "snr_at",
]


def _validate(self, num_train_timesteps: int = 1000) -> None:
    """Raise ``UserError`` for values or combinations that cannot work (the options layer's rules)."""
    check_noise_and_loss(dataclasses.asdict(self), num_train_timesteps)


NoiseOptions = typed_config(
    "NoiseOptions", [(n, BY_NAME[n]) for n in (
        "noise_offset", "noise_offset_random_strength", "adaptive_noise_scale", "multires_noise_iterations",
        "multires_noise_discount", "ip_noise_gamma", "ip_noise_gamma_random_strength", "zero_terminal_snr")],
    "Noise and timestep options, with kohya sd-scripts' names, meanings and (schema) defaults. A value of ``None`` "
    "(or 0 for the float/int options) turns an option off, as in kohya. ``min_timestep``/``max_timestep`` are "
    "resolved: [0, the schedule's length) when unset.",
    extra=[("min_timestep", int, 0), ("max_timestep", int, 1000)],
    namespace={"validate": _validate}, module=__name__,
)


# --------------------------------------------------------------------------------------------------
# random draws


def _gen_device(generator: Optional[torch.Generator]) -> torch.device:
    return generator.device if generator is not None else torch.device("cpu")


def _randn(shape, generator: Optional[torch.Generator], device: torch.device) -> torch.Tensor:
    """float32 standard normal drawn on the generator's device, then moved to ``device``."""
    return torch.randn(shape, generator=generator, device=_gen_device(generator), dtype=torch.float32).to(device)


def _rand_scalar(generator: Optional[torch.Generator]) -> float:
    """One float32 uniform draw in [0, 1) from the generator, as a Python float."""
    return float(torch.rand(1, generator=generator, device=_gen_device(generator), dtype=torch.float32).item())


# --------------------------------------------------------------------------------------------------
# noise


def sample_noise(latents: torch.Tensor, opts: NoiseOptions,
                 generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """The noise for one training step: same shape, device and dtype as ``latents`` (B, C, H, W).

    ``noise = randn(B, C, H, W)``, then, when enabled:

    * offset noise: ``noise += offset * randn(B, C, 1, 1)``, where ``offset`` is ``noise_offset``,
      or ``noise_offset * u`` with ``u ~ U[0, 1)`` (one draw per batch) under ``noise_offset_random_strength``,
      plus ``adaptive_noise_scale * |mean_HW(latents)|`` per (sample, channel), clamped at 0;
    * pyramid (multires) noise, see ``_pyramid_noise``; applied after the offset, as in kohya.

    Draws, in order: randn(B,C,H,W); [rand(1) if random strength]; [randn(B,C,1,1) if offset];
    [pyramid draws]. The latents' values only enter through the adaptive offset, never the RNG.
    """
    device = latents.device
    noise = _randn(latents.shape, generator, device)
    if opts.noise_offset:
        offset = opts.noise_offset
        if opts.noise_offset_random_strength:
            offset = offset * _rand_scalar(generator)
        noise = _apply_noise_offset(latents, noise, offset, opts.adaptive_noise_scale, generator)
    if opts.multires_noise_iterations:
        noise = _pyramid_noise(noise, opts.multires_noise_iterations, opts.multires_noise_discount, generator)
    return noise.to(latents.dtype)


def _apply_noise_offset(latents, noise, offset: float, adaptive_noise_scale: Optional[float], generator):
    """``noise + offset * randn(B, C, 1, 1)``; with adaptive scale the offset is per (sample, channel)."""
    b, c = latents.shape[:2]
    strength = offset
    if adaptive_noise_scale is not None:
        channel_mean = latents.to(noise.device, torch.float32).mean(dim=(2, 3), keepdim=True).abs()
        # a negative adaptive scale can push the offset below zero: clamp, as kohya does
        strength = (offset + adaptive_noise_scale * channel_mean).clamp(min=0.0)
    return noise + strength * _randn((b, c, 1, 1), generator, noise.device)


def _pyramid_noise(noise: torch.Tensor, iterations: int, discount: float, generator) -> torch.Tensor:
    """Multi-resolution ("pyramid") noise, then rescaled to unit standard deviation.

    For ``i`` in ``0..iterations-1``: draw ``r ~ U[2, 4)``, add ``discount**i * upsample(randn(B, C, h_i, w_i))``
    with ``h_i = max(1, int(H / r**i))`` (same for ``w_i``), upsampled bilinearly (align_corners=False) to
    (H, W); stop early once a side reaches 1. Finally divide by the standard deviation of the whole batch.
    As in kohya, step ``i = 0`` adds a second full-resolution noise.

    Draws per iteration, in order: rand(1) for ``r``, then randn(B, C, h_i, w_i). (kohya draws ``r`` from
    Python's ``random``; drawing it from the same generator keeps a single, resumable stream.)
    """
    b, c, h, w = noise.shape
    for i in range(iterations):
        r = 2.0 + 2.0 * _rand_scalar(generator)
        hn, wn = max(1, int(h / r**i)), max(1, int(w / r**i))
        low = _randn((b, c, hn, wn), generator, noise.device)
        noise = noise + F.interpolate(low, size=(h, w), mode="bilinear", align_corners=False) * discount**i
        if hn == 1 or wn == 1:
            break
    return noise / noise.std()


# --------------------------------------------------------------------------------------------------
# timesteps and forward diffusion


def sample_timesteps(batch: int, opts: NoiseOptions, device,
                     generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """One timestep per sample, uniform over the integers in ``[min_timestep, max_timestep)`` (int64).

    Draws: randint(batch).
    """
    t = torch.randint(opts.min_timestep, opts.max_timestep, (batch,), generator=generator,
                      device=_gen_device(generator), dtype=torch.long)
    return t.to(device)


def noisy_latents(scheduler, latents: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor,
                  opts: NoiseOptions, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """The model input: ``scheduler.add_noise(latents, noise', timesteps)``.

    ``noise' = noise`` normally; with ``ip_noise_gamma`` (input perturbation, arXiv:2301.11706)
    ``noise' = noise + gamma * randn_like(latents)``, where ``gamma`` is ``ip_noise_gamma`` or
    ``ip_noise_gamma * u``, ``u ~ U[0, 1)`` under ``ip_noise_gamma_random_strength``. The training target
    stays built from the unperturbed ``noise``.

    Computed in float32 at least (diffusers would cast ``alphas_cumprod`` to fp16/bf16 latents, which
    loses most of ``1 - alphas_cumprod`` at small t) and returned in the latents' dtype.

    Draws, in order: [rand(1) if random strength]; [randn(B,C,H,W) if ip_noise_gamma].
    """
    work = torch.promote_types(latents.dtype, torch.float32)
    perturbed = noise.to(work)
    if opts.ip_noise_gamma:
        gamma = opts.ip_noise_gamma
        if opts.ip_noise_gamma_random_strength:
            gamma = gamma * _rand_scalar(generator)
        perturbed = perturbed + gamma * _randn(latents.shape, generator, latents.device).to(work)
    out = scheduler.add_noise(latents.to(work), perturbed, timesteps.to(latents.device))
    return out.to(latents.dtype)


def noise_noisy_latents_and_timesteps(scheduler, latents: torch.Tensor, opts: NoiseOptions,
                                      generator: Optional[torch.Generator] = None,
                                      timesteps: Optional[torch.Tensor] = None,
                                      ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(noise, noisy_latents, timesteps)`` for one step, drawing in kohya's order: noise, timesteps, perturbation.

    Given ``timesteps`` (the validation loss's fixed ones) no timestep is drawn."""
    noise = sample_noise(latents, opts, generator)
    if timesteps is None:
        timesteps = sample_timesteps(latents.shape[0], opts, latents.device, generator)
    else:
        timesteps = timesteps.to(latents.device, torch.long)
    return noise, noisy_latents(scheduler, latents, noise, timesteps, opts, generator), timesteps


# --------------------------------------------------------------------------------------------------
# the noise schedule


def apply_zero_terminal_snr(scheduler) -> None:
    """Rescale the scheduler's betas in place so that ``alphas_cumprod[-1] == 0`` (zero SNR at t = T).

    "Common Diffusion Noise Schedules and Sample Steps are Flawed" (arXiv:2305.08891), Algorithm 1, via
    diffusers' ``rescale_zero_terminal_snr``: shift ``sqrt(alphas_cumprod)`` so its last value is 0 and
    scale it so its first value is unchanged. Updates ``betas``, ``alphas`` and ``alphas_cumprod``, and
    records ``rescale_betas_zero_snr=True`` in the config when the scheduler class has that option, so a
    scheduler built from this config later gets the same schedule. Applying it twice changes nothing.
    """
    betas = rescale_zero_terminal_snr(scheduler.betas.to(torch.float32))
    scheduler.betas = betas
    scheduler.alphas = 1.0 - betas
    scheduler.alphas_cumprod = torch.cumprod(scheduler.alphas, dim=0)
    if "rescale_betas_zero_snr" in scheduler.config:
        scheduler.register_to_config(rescale_betas_zero_snr=True)


def snr_table(scheduler) -> torch.Tensor:
    """SNR at every training timestep: ``alphas_cumprod / (1 - alphas_cumprod)`` (float32, CPU)."""
    ac = scheduler.alphas_cumprod.detach().to("cpu", torch.float32)
    return ac / (1.0 - ac)


def prepare_scheduler_for_snr(scheduler) -> torch.Tensor:
    """kohya's ``prepare_scheduler_for_custom_training``: the all-timestep SNR table, returned.

    Nothing is stored on the scheduler: the loss weights call ``snr_at``, which reads the current
    ``alphas_cumprod``, so calling this before or after ``apply_zero_terminal_snr`` gives the same
    training. Use the table for logging, plots, or to check a schedule at setup.
    """
    return snr_table(scheduler)


def snr_at(scheduler, timesteps: torch.Tensor) -> torch.Tensor:
    """SNR for each timestep (float32, on the timesteps' device). Zero at t = T under zero terminal SNR."""
    ac = scheduler.alphas_cumprod.detach().to(timesteps.device, torch.float32)[timesteps.long()]
    return ac / (1.0 - ac)
