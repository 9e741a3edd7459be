"""Extracting a LoRA from two checkpoints (tools/extract_lora.py): the module differences and their SVD.

The modules are the ones networks.lora trains, so the extracted file loads wherever a trained
LoRA does; each difference goes through networks/lora_svd.py (dense SVD, factor split,
``--clamp_quantile``), the maths merge and resize use too.
"""

from __future__ import annotations

import torch

from library.errors import UserError
from networks import lora_svd


def lora_networks(org, tuned, dim: int, conv_dim: int | None):
    """The LoRA networks of both models: the modules networks.lora trains, so the names match a trained LoRA."""
    from networks.lora import create_network

    kw = {"conv_dim": conv_dim, "conv_alpha": conv_dim} if conv_dim else {}
    net_o = create_network(1.0, dim, dim, None, org.text_encoders, org.unet, **kw)
    net_t = create_network(1.0, dim, dim, None, tuned.text_encoders, tuned.unet, **kw)
    return net_o, net_t


@torch.no_grad()
def module_diffs(net_o, net_t, min_diff: float) -> tuple[list[tuple[str, torch.Tensor]], bool, float]:
    """[(lora name, tuned - org weight in float32)], whether the text encoders differ, and their max |diff|.

    As kohya: the text encoders count as different when any targeted weight differs by more
    than ``min_diff``; otherwise only the UNet is extracted.
    """
    names_o = [lora.lora_name for lora in net_o.all_loras]
    if names_o != [lora.lora_name for lora in net_t.all_loras]:
        raise UserError("the two models do not have the same LoRA modules; pass models of the same family and shape")
    te_max = 0.0
    te = []
    for lo, lt in zip(net_o.text_encoder_loras, net_t.text_encoder_loras):
        diff = lt.org_module.weight.float() - lo.org_module.weight.float()
        te_max = max(te_max, float(diff.abs().max()))
        te.append((lo.lora_name, diff))
    te_different = te_max > min_diff
    unet = [(lo.lora_name, lt.org_module.weight.float() - lo.org_module.weight.float())
            for lo, lt in zip(net_o.unet_loras, net_t.unet_loras)]
    return (te if te_different else []) + unet, te_different, te_max


def extract_tensors(diffs, dim: int, conv_dim: int | None, clamp_quantile: float, device="cpu", lowrank_niter: int = 2):
    """kohya LoRA tensors (alpha = rank, so scale 1) and per-module Frobenius fraction retained."""
    out: dict[str, torch.Tensor] = {}
    retained: dict[str, float] = {}
    with torch.no_grad():
        for name, diff in diffs:
            conv = lora_svd.is_conv_kxk(diff)
            rank = conv_dim if conv and conv_dim else dim
            flat = diff.flatten(1)
            rank = min(rank, *flat.shape)
            u, s, vh = lora_svd.dense_svd(diff, rank, device, lowrank_niter)
            rank = min(rank, s.numel())
            down, up = lora_svd.split_factors(u, s, vh, rank, tuple(diff.shape))
            up, down = lora_svd.clamp_to_quantile(up, down, clamp_quantile)
            total = float(flat.double().norm())
            retained[name] = 1.0 if total == 0 else min(1.0, float(s[:rank].double().norm()) / total)
            out[f"{name}.lora_up.weight"] = up.float().cpu()
            out[f"{name}.lora_down.weight"] = down.float().cpu()
            out[f"{name}.alpha"] = torch.tensor(float(rank))
    return out, retained
