"""Block-wise ranks, alphas and learning-rate weights, numbered as kohya numbers UNet blocks.

SD1/SD2: 25 blocks: 0 (unused), 1-12 down (3 per diffusers down block: two layers and the
downsampler), 12 mid, 13-24 up. (Index 12 is shared by the last down slot and the mid
block, as in kohya.) SDXL: 23 blocks on the original layout: 0 time/label embedding,
1-9 input_blocks 0-8, 10-12 middle_block 0-2, 13-21 output_blocks 0-8, 22 out.
``down_lr_weight``/``up_lr_weight`` accept a list or a named curve (``cosine``, ``sine``,
``linear``, ``reverse_linear``, ``zeros``, optionally ``+base``).
"""

from __future__ import annotations

import math
import re

from library.errors import UserError

SD_BLOCKS_PER_SIDE = 12
SD_MID_BLOCKS = 1
SDXL_BLOCKS_PER_SIDE = 9
SDXL_MID_BLOCKS = 3

_RE_UPDOWN = re.compile(r"(up|down)_blocks_(\d+)_(resnets|upsamplers|downsamplers|attentions)_(\d+)_")


def num_blocks(is_sdxl: bool) -> int:
    if is_sdxl:
        return 1 + 2 * SDXL_BLOCKS_PER_SIDE + SDXL_MID_BLOCKS + 1
    return 2 * SD_BLOCKS_PER_SIDE + SD_MID_BLOCKS


def block_index(lora_name: str, is_sdxl: bool) -> int:
    """kohya's block number of a UNet LoRA module name, or -1 for text-encoder names."""
    if not lora_name.startswith("lora_unet_"):
        return -1
    if is_sdxl:
        name = lora_name[len("lora_unet_") :]
        if name.startswith(("time_embed_", "label_emb_")):
            return 0
        for prefix, base in (("input_blocks_", 1), ("middle_block_", 10), ("output_blocks_", 13)):
            if name.startswith(prefix):
                return base + int(name[len(prefix) :].split("_")[0])
        if name.startswith("out_"):
            return 22
        return -1
    m = _RE_UPDOWN.search(lora_name)
    if m:
        side, i, kind, j = m.group(1), int(m.group(2)), m.group(3), int(m.group(4))
        idx = 3 * i + (2 if kind in ("upsamplers", "downsamplers") else j)
        return 1 + idx if side == "down" else SD_BLOCKS_PER_SIDE + 1 + idx
    if "mid_block_" in lora_name:
        return SD_BLOCKS_PER_SIDE
    return -1


def _parse_list(text, convert, name: str, expected: int) -> list:
    try:
        values = [convert(v) for v in str(text).split(",")]
    except ValueError:
        raise UserError(f"network_args {name}={text!r}: expected {expected} comma-separated numbers") from None
    if len(values) != expected:
        raise UserError(f"network_args {name} has {len(values)} values; this model has {expected} blocks, give {expected}")
    return values


def block_dims_and_alphas(is_sdxl: bool, kwargs: dict, network_dim: int, network_alpha: float, conv_dim, conv_alpha):
    """(block_dims, block_alphas, conv_block_dims, conv_block_alphas) from network_args; None-filled defaults."""
    n = num_blocks(is_sdxl)
    dims = _parse_list(kwargs["block_dims"], int, "block_dims", n) if kwargs.get("block_dims") else [network_dim] * n
    alphas = (
        _parse_list(kwargs["block_alphas"], float, "block_alphas", n) if kwargs.get("block_alphas") else [network_alpha] * n
    )
    if kwargs.get("conv_block_dims"):
        conv_dims = _parse_list(kwargs["conv_block_dims"], int, "conv_block_dims", n)
        if kwargs.get("conv_block_alphas"):
            conv_alphas = _parse_list(kwargs["conv_block_alphas"], float, "conv_block_alphas", n)
        else:
            conv_alphas = [conv_alpha if conv_alpha is not None else 1.0] * n
    elif conv_dim is not None:
        conv_dims, conv_alphas = [conv_dim] * n, [conv_alpha] * n
    else:
        conv_dims = conv_alphas = None
    return dims, alphas, conv_dims, conv_alphas


def _curve(spec: str, length: int) -> list[float]:
    name, _, base = spec.partition("+")
    base_lr = float(base) if base else 0.0
    steps = [i / (length - 1) for i in range(length)]
    curves = {
        "cosine": [math.sin(math.pi * s / 2) + base_lr for s in reversed(steps)],
        "sine": [math.sin(math.pi * s / 2) + base_lr for s in steps],
        "linear": [s + base_lr for s in steps],
        "reverse_linear": [s + base_lr for s in reversed(steps)],
        "zeros": [base_lr] * length,
    }
    if name not in curves:
        raise UserError(f"unknown lr weight curve '{name}': use one of {', '.join(curves)} or a comma-separated list")
    return curves[name]


def _weights(value, length: int, name: str) -> list[float] | None:
    if value is None:
        return None
    if isinstance(value, str) and "," not in value:
        try:
            return _fit([float(value)], length)
        except ValueError:
            return _curve(value, length)
    if isinstance(value, str):
        try:
            value = [float(s) if s else 0.0 for s in value.split(",")]
        except ValueError:
            raise UserError(f"network_args {name}={value!r}: expected numbers separated by commas") from None
    return _fit(list(value), length)


def _fit(values: list[float], length: int) -> list[float]:
    """Too long: cut; too short: fill with 1.0 (kohya)."""
    return values[:length] + [1.0] * max(0, length - len(values))


def block_lr_weights(is_sdxl: bool, kwargs: dict) -> list[float] | None:
    """Per-block lr multipliers from down/mid/up_lr_weight, or None when none is given."""
    down, mid, up = kwargs.get("down_lr_weight"), kwargs.get("mid_lr_weight"), kwargs.get("up_lr_weight")
    if down is None and mid is None and up is None:
        return None
    side = SDXL_BLOCKS_PER_SIDE if is_sdxl else SD_BLOCKS_PER_SIDE
    mids = SDXL_MID_BLOCKS if is_sdxl else SD_MID_BLOCKS
    threshold = float(kwargs.get("block_lr_zero_threshold", 0.0) or 0.0)
    parts = []
    for value, length, name in ((down, side, "down_lr_weight"), (mid, mids, "mid_lr_weight"), (up, side, "up_lr_weight")):
        w = _weights(value, length, name)
        w = [1.0] * length if w is None else [x if x > threshold else 0.0 for x in w]
        parts.extend(w)
    if is_sdxl:
        parts = [1.0] + parts + [1.0]
    return parts
