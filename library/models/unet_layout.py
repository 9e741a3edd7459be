"""Translate UNet module paths between diffusers and the original (CompVis/SGM) layout.

One mapping serves two users: SDXL LoRA key names (kohya writes SDXL LoRAs with the
original paths, docs/formats.md) and the original-layout single-file checkpoint
reader/writer in library/models. Paths are dotted module or parameter paths
(``down_blocks.1.attentions.0.proj_in.weight``); anything below the block level
(transformer internals, ``.weight``/``.bias``) is the same in both layouts except the
ResNet layer names, which are renamed here.

The block index arithmetic holds for every SD1/SD2/SDXL UNet: ``layers_per_block``
ResNets per down block (plus one downsampler slot), ``layers_per_block + 1`` per up block.
"""

from __future__ import annotations

from dataclasses import dataclass

from library.models.key_paths import rename_head

# Top-level UNet modules outside the down/mid/up blocks.
_TOP_LEVEL = {
    "conv_in": "input_blocks.0.0",
    "time_embedding.linear_1": "time_embed.0",
    "time_embedding.linear_2": "time_embed.2",
    "add_embedding.linear_1": "label_emb.0.0",
    "add_embedding.linear_2": "label_emb.0.2",
    "conv_norm_out": "out.0",
    "conv_out": "out.2",
}
_TOP_LEVEL_REV = {v: k for k, v in _TOP_LEVEL.items()}

# Layer names inside a ResNet block.
_RESNET = {
    "norm1": "in_layers.0",
    "conv1": "in_layers.2",
    "time_emb_proj": "emb_layers.1",
    "norm2": "out_layers.0",
    "conv2": "out_layers.3",
    "conv_shortcut": "skip_connection",
}
_RESNET_REV = {v: k for k, v in _RESNET.items()}


@dataclass(frozen=True)
class UNetLayout:
    """The two facts about a UNet's block structure that the index arithmetic needs."""

    layers_per_block: int
    up_blocks_with_attention: frozenset[int]

    @classmethod
    def from_config(cls, config) -> "UNetLayout":
        """From a diffusers UNet2DConditionModel config (dict or FrozenDict)."""
        up = frozenset(i for i, t in enumerate(config["up_block_types"]) if "CrossAttn" in t)
        lpb = config["layers_per_block"]
        if not isinstance(lpb, int):
            raise UnknownModulePath(f"per-block layers_per_block {lpb!r} is not an SD/SDXL UNet")
        return cls(lpb, up)


class UnknownModulePath(ValueError):
    """A path that belongs to no UNet layout we know (bad key in a checkpoint or LoRA)."""


def _join(*parts: str) -> str:
    return ".".join(p for p in parts if p)


def _resnet_inner(rest: str, table: dict[str, str]) -> str:
    """A ResNet layer renamed by ``table`` (``_RESNET`` one way, ``_RESNET_REV`` the other)."""
    renamed = rename_head(rest, table)
    if renamed is None:
        raise UnknownModulePath(f"unknown ResNet layer in '{rest}'")
    return renamed


def _translate(path: str, top_level: dict[str, str], blocks, what: str) -> str:
    """Top-level modules by their table, block paths by ``blocks(parts)`` (None: not a block path it knows)."""
    top = rename_head(path, top_level)
    if top is not None:
        return top
    try:
        found = blocks(path.split("."))
    except UnknownModulePath:
        raise
    except (IndexError, ValueError):
        found = None
    if found is None:
        raise UnknownModulePath(f"not {what} UNet path: '{path}'")
    return found


def to_compvis(path: str, layout: "UNetLayout") -> str:
    """diffusers UNet path -> original-layout path (without the ``model.diffusion_model.`` prefix)."""
    return _translate(path, _TOP_LEVEL, lambda parts: _blocks_to_compvis(parts, layout), "a diffusers")


def _blocks_to_compvis(parts: list[str], layout: "UNetLayout") -> str | None:
    layers_per_block = layout.layers_per_block
    per_down = layers_per_block + 1
    if parts[0] == "down_blocks":
        b, kind = int(parts[1]), parts[2]
        i, rest = int(parts[3]), ".".join(parts[4:])
        if kind == "resnets":
            return _join(f"input_blocks.{1 + per_down * b + i}.0", _resnet_inner(rest, _RESNET))
        if kind == "attentions":
            return _join(f"input_blocks.{1 + per_down * b + i}.1", rest)
        if kind == "downsamplers" and rest.startswith("conv"):
            return _join(f"input_blocks.{per_down * (b + 1)}.0.op", rest[len("conv") + 1 :])
    elif parts[0] == "mid_block":
        kind, i, rest = parts[1], int(parts[2]), ".".join(parts[3:])
        if kind == "resnets":
            return _join(f"middle_block.{2 * i}", _resnet_inner(rest, _RESNET))
        if kind == "attentions" and i == 0:
            return _join("middle_block.1", rest)
    elif parts[0] == "up_blocks":
        b, kind = int(parts[1]), parts[2]
        i, rest = int(parts[3]), ".".join(parts[4:])
        n = per_down * b
        if kind == "resnets":
            return _join(f"output_blocks.{n + i}.0", _resnet_inner(rest, _RESNET))
        if kind == "attentions":
            return _join(f"output_blocks.{n + i}.1", rest)
        if kind == "upsamplers" and i == 0 and rest.startswith("conv"):
            slot = 2 if b in layout.up_blocks_with_attention else 1
            return _join(f"output_blocks.{n + layers_per_block}.{slot}.conv", rest[len("conv") + 1 :])
    return None


def from_compvis(path: str, layout: "UNetLayout") -> str:
    """Original-layout UNet path -> diffusers path. Inverse of :func:`to_compvis`."""
    # "input_blocks.0.0" is conv_in; other input_blocks fall through to the block arithmetic.
    return _translate(path, _TOP_LEVEL_REV, lambda parts: _blocks_from_compvis(parts, layout), "an original-layout")


def _blocks_from_compvis(parts: list[str], layout: "UNetLayout") -> str | None:
    layers_per_block = layout.layers_per_block
    per_down = layers_per_block + 1
    if parts[0] == "input_blocks":
        n, slot, rest = int(parts[1]), int(parts[2]), ".".join(parts[3:])
        if n > 0 and n % per_down == 0:
            if slot == 0 and rest.startswith("op"):
                return _join(f"down_blocks.{n // per_down - 1}.downsamplers.0.conv", rest[len("op") + 1 :])
        else:
            b, i = (n - 1) // per_down, (n - 1) % per_down
            if slot == 0:
                return _join(f"down_blocks.{b}.resnets.{i}", _resnet_inner(rest, _RESNET_REV))
            if slot == 1:
                return _join(f"down_blocks.{b}.attentions.{i}", rest)
    elif parts[0] == "middle_block":
        n, rest = int(parts[1]), ".".join(parts[2:])
        if n == 1:
            return _join("mid_block.attentions.0", rest)
        if n % 2 == 0:
            return _join(f"mid_block.resnets.{n // 2}", _resnet_inner(rest, _RESNET_REV))
    elif parts[0] == "output_blocks":
        n, slot, rest = int(parts[1]), int(parts[2]), ".".join(parts[3:])
        b, i = n // per_down, n % per_down
        if slot == 0:
            return _join(f"up_blocks.{b}.resnets.{i}", _resnet_inner(rest, _RESNET_REV))
        if rest == "conv" or rest.startswith("conv."):
            if i == layers_per_block and slot in (1, 2):
                return _join(f"up_blocks.{b}.upsamplers.0.conv", rest[len("conv") + 1 :])
        elif slot == 1:
            return _join(f"up_blocks.{b}.attentions.{i}", rest)
    return None
