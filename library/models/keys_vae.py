"""VAE key names: original LDM layout (``first_stage_model.*``) <-> diffusers AutoencoderKL.

Keys here carry no ``first_stage_model.`` prefix. The two layouts differ in block names,
in the decoder's level order (LDM ``decoder.up.0`` is the *last* diffusers up block), and
in the mid-block attention, whose q/k/v/proj_out are 1x1 convolutions ``[c, c, 1, 1]`` in
LDM and linear layers ``[c, c]`` in diffusers; the tensors are reshaped accordingly.
"""

from __future__ import annotations

import torch

from library.models.errors import UnmappedKey
from library.models.key_paths import rename_head

PREFIX = "first_stage_model."

_RESNET = {"nin_shortcut": "conv_shortcut"}  # norm1/conv1/norm2/conv2 are the same in both
_RESNET_REV = {v: k for k, v in _RESNET.items()}
_ATTN = {"norm": "group_norm", "q": "to_q", "k": "to_k", "v": "to_v", "proj_out": "to_out.0"}
_ATTN_REV = {v: k for k, v in _ATTN.items()}
_SAME = ("conv_in", "conv_out", "quant_conv", "post_quant_conv")


def _rename_first(rest: str, table: dict[str, str]) -> str:
    """Rename the longest dotted head of ``rest`` found in ``table``; other names pass through."""
    renamed = rename_head(rest, table)
    return rest if renamed is None else renamed


def _is_attn_matrix(key: str) -> bool:
    return key.endswith(".weight") and any(f".attentions.0.{n}.weight" in key for n in ("to_q", "to_k", "to_v", "to_out.0"))


def _split_side(key: str) -> tuple[list[str], str] | None:
    """The key's dotted parts and its side (encoder/decoder); None for a key named alike in both layouts."""
    p = key.split(".")
    side = p[0]
    if side in _SAME or (side in ("encoder", "decoder") and len(p) > 1 and p[1] in ("conv_in", "conv_out")):
        return None
    if side not in ("encoder", "decoder") or len(p) < 3:
        raise UnmappedKey(key)
    return p, side


def _mirror(side: str, index: int, num_levels: int) -> int:
    """LDM level <-> diffusers block: the same on the encoder, reversed on the decoder (its own inverse)."""
    return index if side == "encoder" else num_levels - 1 - index


def vae_key_from_original(key: str, num_levels: int) -> str:
    """LDM VAE key -> diffusers key. ``num_levels`` = len(block_out_channels)."""
    split = _split_side(key)
    if split is None:
        return key
    p, side = split
    if p[1] == "norm_out":
        return f"{side}.conv_norm_out." + ".".join(p[2:])
    if p[1] == "mid":
        if p[2] in ("block_1", "block_2"):
            idx = int(p[2][-1]) - 1
            return f"{side}.mid_block.resnets.{idx}." + _rename_first(".".join(p[3:]), _RESNET)
        if p[2] == "attn_1":
            return f"{side}.mid_block.attentions.0." + _rename_first(".".join(p[3:]), _ATTN)
        raise UnmappedKey(key)
    level_name = "down" if side == "encoder" else "up"
    if p[1] != level_name or len(p) < 5 or not p[2].isdigit():
        raise UnmappedKey(key)
    level = int(p[2])
    if level >= num_levels:
        raise UnmappedKey(key)
    block = _mirror(side, level, num_levels)
    blocks = f"{side}.{level_name}_blocks.{block}"
    if p[3] == "block" and p[4].isdigit():
        return f"{blocks}.resnets.{p[4]}." + _rename_first(".".join(p[5:]), _RESNET)
    sampler = "downsample" if side == "encoder" else "upsample"
    if p[3] == sampler and p[4] == "conv":
        return f"{blocks}.{sampler}rs.0.conv." + ".".join(p[5:])
    raise UnmappedKey(key)


def vae_key_to_original(key: str, num_levels: int) -> str:
    """diffusers VAE key -> LDM key. Inverse of :func:`vae_key_from_original`."""
    split = _split_side(key)
    if split is None:
        return key
    p, side = split
    if p[1] == "conv_norm_out":
        return f"{side}.norm_out." + ".".join(p[2:])
    if p[1] == "mid_block":
        if p[2] == "resnets" and p[3] in ("0", "1"):
            return f"{side}.mid.block_{int(p[3]) + 1}." + _rename_first(".".join(p[4:]), _RESNET_REV)
        if p[2] == "attentions" and p[3] == "0":
            return f"{side}.mid.attn_1." + _rename_first(".".join(p[4:]), _ATTN_REV)
        raise UnmappedKey(key)
    level_name = "down" if side == "encoder" else "up"
    if p[1] != f"{level_name}_blocks" or len(p) < 5 or not p[2].isdigit():
        raise UnmappedKey(key)
    block = int(p[2])
    level = _mirror(side, block, num_levels)
    levels = f"{side}.{level_name}.{level}"
    if p[3] == "resnets":
        return f"{levels}.block.{p[4]}." + _rename_first(".".join(p[5:]), _RESNET_REV)
    sampler = "downsample" if side == "encoder" else "upsample"
    if p[3] == f"{sampler}rs" and p[4] == "0" and len(p) > 5 and p[5] == "conv":
        return f"{levels}.{sampler}.conv." + ".".join(p[6:])
    raise UnmappedKey(key)


def vae_from_original(key: str, tensor: torch.Tensor, num_levels: int) -> tuple[str, torch.Tensor]:
    """One LDM VAE tensor -> (diffusers key, tensor), squeezing 1x1-conv attention weights."""
    new = vae_key_from_original(key, num_levels)
    if _is_attn_matrix(new) and tensor.ndim == 4:
        tensor = tensor.reshape(tensor.shape[0], tensor.shape[1])
    return new, tensor


def vae_to_original(state_dict: dict[str, torch.Tensor], num_levels: int) -> dict[str, torch.Tensor]:
    """A diffusers AutoencoderKL state dict -> LDM keys, attention matrices as 1x1 convs."""
    out = {}
    for key, tensor in state_dict.items():
        if _is_attn_matrix(key) and tensor.ndim == 2:
            tensor = tensor.reshape(*tensor.shape, 1, 1)
        out[vae_key_to_original(key, num_levels)] = tensor
    return out
