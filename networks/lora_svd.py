"""SVD arithmetic shared by resizing and extracting LoRAs, as pure functions on tensors.

A LoRA module is a low-rank factorisation ``delta = up @ down * scale``. Resizing and
extracting both come down to: take a matrix's SVD, choose how many singular values to
keep (a fixed rank, or kohya's dynamic rules), and split ``U S Vh`` back into ``up`` and
``down``. Keeping this here lets each step be tested alone against ``torch.linalg.svd``.

Conventions (kohya's): ``up = U[:, :k] * S[:k]``, ``down = Vh[:k]``, so the scale of the
result lives in ``alpha`` and the saved factors are unbalanced (all magnitude in ``up``).
Conv kernels are flattened to ``[out, in*kh*kw]``; ``up`` is then a 1x1 conv. An SVD fixes each
singular pair only up to sign, and the signed-value quantile clamp depends on that sign, so
``split_factors`` makes it canonical: every tool that goes through here (merge, resize,
extract) writes the same factors for the same delta, whichever decomposition path it took.
"""

from __future__ import annotations

import math

import torch

MIN_SV = 1e-6  # kohya: a module whose largest singular value is below this is treated as zero (rank 1)
DYNAMIC_METHODS = ("sv_ratio", "sv_fro", "sv_cumulative")
LOWRANK_MIN_DIM = 2048  # kohya uses a randomised SVD when both sides of a dense weight exceed this


def _work_dtype(device) -> torch.dtype:
    return torch.float64 if torch.device(device).type in ("cpu", "cuda") else torch.float32


def product_svd(up: torch.Tensor, down: torch.Tensor, device="cpu") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Exact thin SVD of ``up @ down`` (conv kernels flattened) without forming the product.

    With ``up = Qu Ru`` and ``down.T = Qd Rd`` (QR), ``up @ down = Qu (Ru Rd.T) Qd.T``, so only
    the r x r core is decomposed: exact, O((out + in) r^2), and the singular values beyond r
    (all zero) are never computed. Returns (U [out, r], S [r], Vh [r, in*kh*kw]) in float64.
    """
    dt = _work_dtype(device)
    a = up.flatten(1).to(device, dt)
    b = down.flatten(1).to(device, dt)
    qa, ra = torch.linalg.qr(a)
    qb, rb = torch.linalg.qr(b.T)
    u, s, vh = torch.linalg.svd(ra @ rb.T, full_matrices=False)
    return qa @ u, s, vh @ qb.T


def dense_svd(weight: torch.Tensor, rank: int, device="cpu", lowrank_niter: int = 2) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Thin SVD of a dense weight (conv kernels flattened); randomised when both sides exceed 2048.

    The randomised path (kohya's, ``torch.svd_lowrank`` with q = 2*rank) only returns the top
    singular values; ``lowrank_niter=0`` forces the exact SVD.
    """
    w = weight.flatten(1).to(device, _work_dtype(device))
    out_dim, in_dim = w.shape
    if lowrank_niter > 0 and out_dim > LOWRANK_MIN_DIM and in_dim > LOWRANK_MIN_DIM:
        u, s, v = torch.svd_lowrank(w, q=min(2 * rank, out_dim, in_dim), niter=lowrank_niter)
        return u, s, v.T
    return torch.linalg.svd(w, full_matrices=False)


def select_rank(s: torch.Tensor, max_rank: int, method: str | None = None, param: float | None = None) -> int:
    """How many singular values to keep: ``max_rank``, or kohya's dynamic rule capped by it.

    * ``sv_ratio``: keep values larger than ``S[0] / param``.
    * ``sv_cumulative``: smallest k with ``sum(S[:k]) / sum(S) >= param``.
    * ``sv_fro``: smallest k with ``sqrt(sum(S[:k]^2) / sum(S^2)) >= param``.
    A zero matrix (``S[0] <= 1e-6``) gets rank 1. The result is in ``[1, min(max_rank, len(S))]``.
    """
    n = int(s.numel())
    if n == 0 or float(s[0]) <= MIN_SV:
        return 1
    s = s.double()
    if method is None:
        k = max_rank
    elif method == "sv_ratio":
        k = int((s > s[0] / param).sum())
    elif method == "sv_cumulative":
        k = int(torch.searchsorted(torch.cumsum(s, 0) / s.sum(), torch.tensor(float(param), dtype=s.dtype))) + 1
    elif method == "sv_fro":
        sq = s.pow(2)
        k = int(torch.searchsorted(torch.cumsum(sq, 0) / sq.sum(), torch.tensor(float(param) ** 2, dtype=s.dtype))) + 1
    else:
        raise ValueError(f"unknown dynamic method {method!r}; use one of {', '.join(DYNAMIC_METHODS)}")
    return max(1, min(k, max_rank, n))


def frobenius_retained(s: torch.Tensor, rank: int) -> float:
    """``||W_k||_F / ||W||_F`` for the rank-k truncation (1.0 for a zero matrix).

    The relative error of the truncation is ``sqrt(1 - retained^2)``.
    """
    sq = s.double().pow(2)
    total = float(sq.sum())
    if total <= 0:
        return 1.0
    return math.sqrt(min(1.0, float(sq[:rank].sum()) / total))


def relative_error(s: torch.Tensor, rank: int) -> float:
    """``||W - W_k||_F / ||W||_F``: the norm of the dropped singular values over the whole."""
    sq = s.double().pow(2)
    total = float(sq.sum())
    return 0.0 if total <= 0 else math.sqrt(float(sq[rank:].sum()) / total)


def quantile(values: torch.Tensor, q: float) -> torch.Tensor:
    """``torch.quantile`` (linear interpolation), also for tensors beyond its 16M-element limit."""
    values = values.flatten()
    if values.numel() <= 16_000_000:
        return torch.quantile(values, q)
    pos = q * (values.numel() - 1)
    lo, hi = math.floor(pos), math.ceil(pos)
    a = values.kthvalue(lo + 1).values
    b = values.kthvalue(hi + 1).values if hi != lo else a
    return a + (b - a) * (pos - lo)


def clamp_to_quantile(up: torch.Tensor, down: torch.Tensor, q: float) -> tuple[torch.Tensor, torch.Tensor]:
    """kohya's outlier clamp (``--clamp_quantile``): both factors to ``[-h, h]``, h = the q-quantile of their joint values.

    As kohya's extract_lora_from_models / svd_merge_lora: the quantile (linear interpolation,
    ``torch.quantile``'s) is of the signed values of ``up = U S`` and ``down = Vh`` together,
    computed in the factors' own dtype; ``q >= 1`` leaves them as they are.
    """
    if q >= 1:
        return up, down
    hi = quantile(torch.cat([up.flatten(), down.flatten()]), q)
    return up.clamp(-hi, hi), down.clamp(-hi, hi)


def split_factors(u: torch.Tensor, s: torch.Tensor, vh: torch.Tensor, rank: int, down_shape: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """(down, up) of rank ``rank`` in LoRA layout: ``up = U S`` ([out, k] or [out, k, 1, 1]), ``down = Vh``.

    ``down_shape`` is the base layer's weight shape ([out, in] or [out, in, kh, kw]). Signs are
    canonical: each kept row of ``down`` has its largest-magnitude value positive.
    """
    u, vh = canonical_signs(u[:, :rank], vh[:rank])
    up = u * s[:rank]
    down = vh
    if len(down_shape) == 4:
        up = up.reshape(up.shape[0], rank, 1, 1)
        down = down.reshape(rank, *down_shape[1:])
    return down.contiguous(), up.contiguous()


def canonical_signs(u: torch.Tensor, vh: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(u, vh) with each singular pair's sign chosen so the largest-magnitude value of its ``vh`` row is positive.

    ``u[:, i] vh[i]`` is unchanged; only the arbitrary sign LAPACK (or the QR path) picked goes.
    """
    if vh.numel() == 0:
        return u, vh
    idx = vh.abs().argmax(dim=1, keepdim=True)
    sign = torch.sign(vh.gather(1, idx)).squeeze(1)
    sign = torch.where(sign == 0, torch.ones_like(sign), sign)
    return u * sign, vh * sign[:, None]


def is_conv_kxk(weight: torch.Tensor) -> bool:
    """A conv kernel larger than 1x1 (LoCon's ``conv_dim`` modules); Linear and 1x1 use ``network_dim``."""
    return weight.dim() == 4 and tuple(weight.shape[2:]) != (1, 1)
