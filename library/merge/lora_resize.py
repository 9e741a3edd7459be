"""Resizing a LoRA's modules to a lower rank (tools/resize_lora.py): exact SVD of each product, kohya's rank rules.

Each module's delta ``up @ down * alpha/r`` is decomposed with networks/lora_svd.py (the same
SVD path, factor split and signs merge and extract use) and truncated; the new alpha is
``alpha/r * new_r`` so the kept part of the delta is unchanged. Reading and checking the file's
keys stays with the tool.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from networks import lora_svd


@dataclass
class ModuleResize:
    """What happened to one module (the --verbose line and the summary are built from these)."""

    name: str
    conv: bool
    old_rank: int
    new_rank: int
    old_alpha: float
    new_alpha: float
    fro_retained: float
    sum_retained: float
    max_ratio: float


def resize_modules(
    modules: dict[str, tuple[torch.Tensor, torch.Tensor, float | None]],
    new_rank: int,
    new_conv_rank: int | None = None,
    dynamic_method: str | None = None,
    dynamic_param: float | None = None,
    device="cpu",
) -> tuple[dict[str, torch.Tensor], list[ModuleResize]]:
    """Resized kohya tensors (float32) of ``{module: (down, up, alpha or None)}`` and one ModuleResize per module.

    ``new_rank`` is the rank of Linear and 1x1-conv modules (the cap with a dynamic method),
    ``new_conv_rank`` that of 3x3 convs (default ``new_rank``). A module is never given a
    higher rank than it has: the extra singular values would all be zero.
    """
    conv_rank = new_rank if new_conv_rank is None else new_conv_rank
    out: dict[str, torch.Tensor] = {}
    rows = []
    with torch.no_grad():
        for name in sorted(modules):
            down, up, alpha = modules[name]
            old_rank = int(down.shape[0])
            old_alpha = float(old_rank) if not alpha else alpha  # kohya: missing/0 alpha = rank
            scale = old_alpha / old_rank
            conv = lora_svd.is_conv_kxk(down)
            u, s, vh = lora_svd.product_svd(up.float(), down.float(), device)
            cap = min(conv_rank if conv else new_rank, old_rank)
            k = lora_svd.select_rank(s, cap, dynamic_method, dynamic_param)
            shape = (up.shape[0], *down.shape[1:])
            new_down, new_up = lora_svd.split_factors(u, s, vh, k, shape)
            out[f"{name}.lora_down.weight"] = new_down.float().cpu()
            out[f"{name}.lora_up.weight"] = new_up.float().cpu()
            out[f"{name}.alpha"] = torch.tensor(scale * k, dtype=torch.float32)
            s_abs = s.abs().double()
            rows.append(ModuleResize(
                name, conv, old_rank, k, old_alpha, scale * k,
                lora_svd.frobenius_retained(s, k),
                float(s_abs[:k].sum() / s_abs.sum()) if float(s_abs.sum()) > 0 else 1.0,
                float(s[0] / s[k - 1]) if float(s[k - 1]) > 0 else float("inf"),
            ))
    return out, rows
