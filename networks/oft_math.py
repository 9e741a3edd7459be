"""OFT arithmetic (orthogonal finetuning, kohya's networks/oft.py and LyCORIS diag-oft), as pure functions.

A module holds ``blocks`` [k, b, b] for a layer with ``out = k * b`` output channels. The skew-
symmetric ``Q = blocks - blocksᵀ`` (norm-limited by the constraint) gives a block-diagonal rotation
by the Cayley transform ``R = (I + Q)(I - Q)⁻¹``; the layer's weight becomes ``Rᵀ``-rotated per block
of output channels. Zero blocks are the identity, so a fresh network changes nothing.
"""

from __future__ import annotations

import torch


def constraint_for(alpha: float, out_dim: int) -> float:
    """kohya's and LyCORIS' constraint: the file's ``alpha`` times the layer's output channels."""
    return float(alpha) * out_dim


def limited_skew(blocks: torch.Tensor, constraint: float) -> torch.Tensor:
    """``Q = B - Bᵀ`` scaled down so that ``‖Q‖ ≤ constraint`` (0 or less: no limit)."""
    q = blocks - blocks.transpose(1, 2)
    if constraint <= 0:
        return q
    norm = q.norm()
    return q * ((norm.clamp(max=constraint) + 1e-8) / (norm + 1e-8))


def rotation(blocks: torch.Tensor, constraint: float, multiplier: float = 1.0) -> torch.Tensor:
    """Block rotations (float32) blended with the identity by ``multiplier``: ``m (R - I) + I``."""
    q = limited_skew(blocks.float(), constraint)
    eye = torch.eye(q.shape[-1], device=q.device, dtype=q.dtype).expand_as(q)
    r = (eye + q) @ torch.linalg.inv(eye - q)
    return multiplier * (r - eye) + eye


def rotate_weight(r: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Rotate a Linear/Conv weight's output channels block by block: ``W'_k = R_kᵀ W_k`` (float32)."""
    k, b, _ = r.shape
    w = weight.float().unflatten(0, (k, b))
    return torch.einsum("knm,kn...->km...", r, w).flatten(0, 1)
