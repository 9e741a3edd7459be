"""Training target, elementwise loss and per-timestep loss weights: pure functions, no RNG.

One training step's loss, in kohya sd-scripts' order (``train_network.py`` process_batch):

1. elementwise loss between prediction and target (``loss_type``: l2, l1, huber, smooth_l1);
2. optional mask (alpha masks), then the mean over every non-batch dimension -> one value per sample;
3. ``× loss_weights`` (per sample, e.g. ``prior_loss_weight`` for regularisation images);
4. min-SNR weighting, 5. scale_v_pred_loss_like_noise_pred, 6. v_pred_like_loss, 7. debiased estimation;
8. ``total_loss``: the mean over the batch.

All arithmetic is float32 (prediction and target are upcast), whatever the model's dtype.
SNR comes from ``noise.snr_at``, i.e. from the scheduler's current ``alphas_cumprod``.
"""

from __future__ import annotations

import math
import dataclasses
from typing import List, Optional

import torch
import torch.nn.functional as F

from library.errors import UserError
from library.options.definitions import BY_NAME
from library.options.typed import typed_config
from library.options.validate import check_noise_and_loss, check_snr_weighting
from library.vocabulary import HUBER_SCHEDULES, LOSS_TYPES
from library.train.noise import NoiseOptions, snr_at

__all__ = [
    "LossOptions",
    "LOSS_TYPES",
    "HUBER_SCHEDULES",
    "SNR_CLAMP",
    "check_options",
    "target_for",
    "huber_c_for",
    "elementwise_loss",
    "loss_weight_for",
    "per_sample_loss",
    "total_loss",
]

SNR_CLAMP = 1000.0
"""kohya caps SNR at this value for scale_v_pred_loss_like_noise_pred, v_pred_like_loss and the debiased
weight (SNR at t = 0 of the SD schedule is about 1175)."""


def _validate(self) -> None:
    """Raise ``UserError`` for values or combinations that cannot work (the options layer's rules)."""
    check_noise_and_loss(dataclasses.asdict(self))


LossOptions = typed_config(
    "LossOptions", [(n, BY_NAME[n]) for n in (
        "loss_type", "huber_schedule", "huber_c", "huber_scale", "min_snr_gamma", "scale_v_pred_loss_like_noise_pred",
        "v_pred_like_loss", "debiased_estimation_loss", "v_parameterization")],
    "Loss options, with kohya sd-scripts' names, meanings and (schema) defaults; ``v_parameterization`` is the "
    "model's prediction type as trained.",
    namespace={
        "validate": _validate,
        # the diffusers prediction type the model is trained for
        "prediction_type": property(lambda self: "v_prediction" if self.v_parameterization else "epsilon"),
        "uses_huber_c": property(lambda self: self.loss_type in ("huber", "smooth_l1")),
    },
    module=__name__,
)


def check_options(noise: NoiseOptions, loss: LossOptions, num_train_timesteps: int = 1000) -> List[str]:
    """Validate both option sets and their combination; return warnings for the caller to log.

    The SNR weights here follow the schedule actually trained (kohya computes them before
    --zero_terminal_snr rescales it), so the two epsilon-only weights that divide by SNR cannot be
    combined with zero terminal SNR: they would reach ~1e3 (debiased) and ~1e6 (v_pred_like_loss)
    at t = 998 and infinity at t = 999.
    """
    check_noise_and_loss({**dataclasses.asdict(noise), **dataclasses.asdict(loss)}, num_train_timesteps)
    warnings = []  # options without effect are library.options.notices' (logged when the options are parsed)
    if noise.zero_terminal_snr:
        if not loss.v_parameterization:
            warnings.append("--zero_terminal_snr without --v_parameterization: an epsilon model cannot "
                            "predict anything useful at zero SNR; results will be unexpected")
        # SNR falls to 2e-7 at t = 998 and 0 at t = 999 on the SD schedule: weights that divide by it explode
        check_snr_weighting(True, loss.debiased_estimation_loss, loss.v_pred_like_loss, loss.v_parameterization)
    return warnings


# --------------------------------------------------------------------------------------------------
# target and elementwise loss


def target_for(scheduler, latents: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor,
               prediction_type: str) -> torch.Tensor:
    """What the model must predict: the noise (``epsilon``) or the velocity (``v_prediction``).

    velocity = ``sqrt(alphas_cumprod[t]) * noise - sqrt(1 - alphas_cumprod[t]) * latents`` via
    ``scheduler.get_velocity``, computed in float32 at least (and returned so).
    """
    if prediction_type == "epsilon":
        return noise
    if prediction_type == "v_prediction":
        work = torch.promote_types(latents.dtype, torch.float32)
        return scheduler.get_velocity(latents.to(work), noise.to(work), timesteps.to(latents.device))
    raise UserError(f"prediction type {prediction_type!r} is not supported: train an epsilon model, "
                    "or a v-prediction model with --v_parameterization")


def huber_c_for(timesteps: torch.Tensor, scheduler, opts: LossOptions) -> torch.Tensor:
    """The Huber threshold ``c`` for each sample (float32, on the timesteps' device).

    * constant:    ``huber_c * huber_scale``
    * exponential: ``huber_scale * huber_c ** (t / T)``: ``huber_scale`` at t = 0, falling towards
      ``huber_c * huber_scale`` at T
    * snr:         ``huber_scale * ((1 - huber_c) / (1 + sigma_t)**2 + huber_c)``,
      ``sigma_t = sqrt((1 - alphas_cumprod[t]) / alphas_cumprod[t])`` (about 1 at t = 0, ``huber_c`` at T)

    T is the scheduler's ``num_train_timesteps``. (kohya leaves out ``huber_scale`` in the snr schedule
    only; here it scales all three, so the option always does what its help says.)
    """
    t = timesteps.to(torch.float32)
    if opts.huber_schedule == "constant":
        return torch.full_like(t, opts.huber_c * opts.huber_scale)
    if opts.huber_schedule == "exponential":
        num_t = scheduler.config.num_train_timesteps
        return torch.exp(math.log(opts.huber_c) * t / num_t) * opts.huber_scale
    if opts.huber_schedule == "snr":
        ac = scheduler.alphas_cumprod.detach().to(timesteps.device, torch.float32)[timesteps.long()]
        sigma = ((1.0 - ac) / ac).sqrt()  # inf at zero terminal SNR -> c = huber_c there
        return ((1.0 - opts.huber_c) / (1.0 + sigma) ** 2 + opts.huber_c) * opts.huber_scale
    raise UserError(f"--huber_schedule must be one of {', '.join(HUBER_SCHEDULES)} (got {opts.huber_schedule!r})")


def elementwise_loss(pred: torch.Tensor, target: torch.Tensor, loss_type: str,
                     huber_c: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Unreduced loss, float32, shape of ``pred``. ``d = pred - target``, ``c`` per sample:

    * l2: ``d**2``          * l1: ``|d|``
    * huber (pseudo-Huber): ``2c (sqrt(d**2 + c**2) - c)``  (≈ d² for small d, ≈ 2c|d| for large)
    * smooth_l1:            ``2 (sqrt(d**2 + c**2) - c)``   (≈ d²/c for small d, ≈ 2|d| for large)
    """
    d = pred.float() - target.float()
    if loss_type == "l2":
        return d * d
    if loss_type == "l1":
        return d.abs()
    if loss_type in ("huber", "smooth_l1"):
        if huber_c is None:
            raise ValueError(f"loss_type {loss_type!r} needs huber_c (from huber_c_for)")
        c = huber_c.to(d.device, torch.float32).reshape(-1, *([1] * (d.ndim - 1)))
        # sqrt(d² + c²) - c, written as d² / (sqrt(d² + c²) + c): same value, no float32 cancellation
        # for small d (the direct form loses ~3 digits at d = 1e-3, c = 0.1)
        smooth = d * d / (torch.sqrt(d * d + c * c) + c)
        return 2.0 * c * smooth if loss_type == "huber" else 2.0 * smooth
    raise UserError(f"--loss_type must be one of {', '.join(LOSS_TYPES)} (got {loss_type!r})")


def _resize_mask(mask: torch.Tensor, loss: torch.Tensor) -> torch.Tensor:
    """(B, H, W) or (B, 1, H, W) mask in [0, 1] -> (B, 1, h, w) at the loss's size, by area averaging."""
    m = mask.to(loss.device, torch.float32)
    if m.ndim == loss.ndim - 1:
        m = m.unsqueeze(1)
    return F.interpolate(m, size=loss.shape[2:], mode="area")


# --------------------------------------------------------------------------------------------------
# timestep weights


def loss_weight_for(timesteps: torch.Tensor, scheduler, opts: LossOptions) -> torch.Tensor:
    """The per-sample factor the SNR-based options multiply the loss by (1 where none is on).

    Exactly kohya's sequence, with ``s = SNR(t)`` and ``s' = min(s, 1000)``:

    * min_snr_gamma γ:   ``× min(s, γ) / s`` (epsilon) or ``× min(s, γ) / (s + 1)`` (v-prediction)
    * scale_v_pred_loss_like_noise_pred: ``× s' / (s' + 1)``
    * v_pred_like_loss k: ``loss + k · loss · (s' + 1) / s'``, i.e. ``× (1 + k (s' + 1) / s')``
    * debiased_estimation_loss: ``× 1 / sqrt(s')`` (epsilon) or ``× 1 / (s' + 1)`` (v-prediction)

    The epsilon min-SNR weight is evaluated as ``min(1, γ / s)``: equal for s > 0, and 1 instead of
    0/0 at s = 0 (zero terminal SNR).
    """
    snr = snr_at(scheduler, timesteps)
    weight = torch.ones_like(snr)
    if opts.min_snr_gamma:
        gamma = float(opts.min_snr_gamma)
        if opts.v_parameterization:
            weight = weight * (torch.clamp(snr, max=gamma) / (snr + 1.0))
        else:
            weight = weight * torch.clamp(gamma / snr, max=1.0)
    capped = torch.clamp(snr, max=SNR_CLAMP)
    if opts.scale_v_pred_loss_like_noise_pred:
        weight = weight * (capped / (capped + 1.0))
    if opts.v_pred_like_loss:
        weight = weight * (1.0 + opts.v_pred_like_loss * (capped + 1.0) / capped)
    if opts.debiased_estimation_loss:
        weight = weight * (1.0 / (capped + 1.0) if opts.v_parameterization else capped.rsqrt())
    return weight


def per_sample_loss(pred: torch.Tensor, target: torch.Tensor, timesteps: torch.Tensor, scheduler,
                    opts: LossOptions, loss_weights: Optional[torch.Tensor] = None,
                    mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """The loss of each sample, float32, shape (B,).

    ``loss_weights``: (B,) per-sample factors (``prior_loss_weight`` for regularisation images, else 1).
    ``mask``: optional (B, H, W) or (B, 1, H, W) weights in [0, 1] at any resolution (e.g. the image's
    alpha channel), area-resized to the latent size and multiplied in before the mean, as kohya's
    ``--masked_loss`` (the mean is still over all elements, so a half-masked image has about half the loss).
    """
    huber_c = huber_c_for(timesteps, scheduler, opts) if opts.uses_huber_c else None
    loss = elementwise_loss(pred, target, opts.loss_type, huber_c)
    if mask is not None:
        loss = loss * _resize_mask(mask, loss)
    loss = loss.mean(dim=tuple(range(1, loss.ndim)))
    if loss_weights is not None:
        loss = loss * loss_weights.to(loss.device, torch.float32)
    return loss * loss_weight_for(timesteps, scheduler, opts).to(loss.device)


def total_loss(pred: torch.Tensor, target: torch.Tensor, timesteps: torch.Tensor, scheduler, opts: LossOptions,
               loss_weights: Optional[torch.Tensor] = None, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """The scalar to backpropagate: ``per_sample_loss(...).mean()``."""
    return per_sample_loss(pred, target, timesteps, scheduler, opts, loss_weights, mask).mean()
