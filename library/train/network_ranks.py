"""A network's ranks against the layers they adapt, checked before any step runs.

Why: a rank larger than ``min(in, out)`` of the layer it wraps cannot add anything a smaller rank
could not (the update is a matrix of that layer's size) and only costs memory and time; kohya trains it
silently. Found right after the network is built, before caching and training, with the layer named.
Generic over network types: any submodule with an integer ``lora_dim`` and ``lora_down``/``lora_up``
layers is checked, whatever module built it.
"""

from __future__ import annotations

import math

from library.errors import UserError


def _inputs(layer) -> int:
    if hasattr(layer, "in_features"):
        return int(layer.in_features)
    return int(layer.in_channels) * math.prod(getattr(layer, "kernel_size", (1,)))


def _outputs(layer) -> int:
    return int(getattr(layer, "out_features", None) or layer.out_channels)


def too_large_ranks(network) -> list:
    """[(name, rank, in, out)] for every adapter whose rank exceeds min(in, out), smallest layer first."""
    found = []
    for name, module in network.named_modules():
        rank = getattr(module, "lora_dim", None)
        down, up = getattr(module, "lora_down", None), getattr(module, "lora_up", None)
        if not isinstance(rank, int) or down is None or up is None:
            continue
        size_in, size_out = _inputs(down), _outputs(up)
        if rank > min(size_in, size_out):
            found.append((getattr(module, "lora_name", name), rank, size_in, size_out))
    return sorted(found, key=lambda f: min(f[2], f[3]))


def check_ranks(network) -> None:
    """UserError naming the smallest layer a rank does not fit."""
    found = too_large_ranks(network)
    if not found:
        return
    name, rank, size_in, size_out = found[0]
    most = min(size_in, size_out)
    conv = "conv" in name or "_conv" in name
    option = "network_dim (or conv_dim in network_args for 3x3 convolutions)" if conv else "network_dim"
    raise UserError(f"rank {rank} is larger than layer {name} ({size_in} in, {size_out} out; {len(found)} layers "
                    f"like it): a rank cannot exceed min(in, out) = {most}; lower {option} to {most} or less "
                    "(block_dims set ranks per block)")
