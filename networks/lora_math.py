"""The LoRA arithmetic, as pure functions on tensors, so each can be tested alone.

A LoRA module holds ``down`` ([r, in] or conv [r, in, kh, kw]) and ``up`` ([out, r] or
[out, r, 1, 1]); its weight delta is ``up @ down * alpha / r * multiplier``.
"""

from __future__ import annotations

import torch


def effective_alpha(alpha, rank: int) -> float:
    """kohya's rule: a missing or zero alpha means alpha = rank (scale 1)."""
    if isinstance(alpha, torch.Tensor):
        alpha = float(alpha.detach().float().item())
    if alpha is None or alpha == 0:
        return float(rank)
    return float(alpha)


def delta_weight(down: torch.Tensor, up: torch.Tensor, scale: float) -> torch.Tensor:
    """Weight delta of one module (float32), shaped like the base layer's weight.

    Linear: ``up @ down``; 1x1 conv: the same on squeezed kernels; 3x3 conv: ``up``
    (1x1) composed after ``down`` (kxk), which is a conv of the down kernel by up.
    """
    down = down.float()
    up = up.float()
    if down.dim() == 2:
        w = up @ down
    elif down.shape[2:] == (1, 1):
        w = (up.flatten(1) @ down.flatten(1)).unsqueeze(-1).unsqueeze(-1)
    else:
        w = torch.nn.functional.conv2d(down.permute(1, 0, 2, 3), up).permute(1, 0, 2, 3)
    return w * scale


def max_norm_ratio(norm: torch.Tensor, max_norm: float) -> torch.Tensor:
    """Factor that brings a module's delta norm down to ``max_norm`` (1 if already below).

    The norm is floored at max_norm/2 as kohya does, so tiny deltas are never scaled up.
    """
    norm = norm.clamp(min=max_norm / 2)
    return norm.clamp(max=max_norm) / norm


def rank_dropout_mask(batch: int, rank: int, p: float, ndim: int, device, generator=None) -> torch.Tensor:
    """Keep-mask over the rank axis, broadcastable to the down output of a given ndim."""
    mask = torch.rand((batch, rank), device=device, generator=generator) > p
    if ndim == 3:  # text encoder / transformer tokens: [B, T, r]
        mask = mask.unsqueeze(1)
    elif ndim == 4:  # conv: [B, r, H, W]
        mask = mask.unsqueeze(-1).unsqueeze(-1)
    return mask


def lora_fa_down_std(in_dim: int, rank: int) -> float:
    """LoRA-FA's init of the frozen down projection (arXiv 2308.03303, as kohya's lora_fa): N(0, 2/(in+r))."""
    return (2.0 / (in_dim + rank)) ** 0.5


def dylora_scale(alpha: float, rank: int) -> float:
    """DyLoRA's scale at a truncated rank: alpha / rank, so a file cut to that rank keeps its alpha."""
    return float(alpha) / rank
