"""kohya LoRA module names <-> (component, diffusers module path), from the names alone.

A kohya name is a prefix plus the module path with every ``.`` replaced by ``_``
(docs/formats.md). Going back needs to know which ``_`` were dots, so this module keeps the
vocabulary of module names that occur in SD1/SD2/SDXL UNets (diffusers and original
layout) and HF CLIP text encoders; a name with any other word is refused rather than
guessed. SDXL UNet names are in the original layout and are translated with
library/models/unet_layout; SD1/SD2 UNet names are diffusers paths already.

Paths here are diffusers module paths; text-encoder paths are given without the
``text_model.`` level (transformers v5 has none), kohya names always include it.
"""

from __future__ import annotations

import re

from library.models.unet_layout import UNetLayout, UnknownModulePath, from_compvis, to_compvis

UNET, TE, TE2 = "unet", "text_encoder", "text_encoder_2"
COMPONENTS = (UNET, TE, TE2)

# The block layouts of the released models: enough to map names without loading a model.
SD_LAYOUT = UNetLayout(layers_per_block=2, up_blocks_with_attention=frozenset({1, 2, 3}))
SDXL_LAYOUT = UNetLayout(layers_per_block=2, up_blocks_with_attention=frozenset({0, 1}))

_WORDS = {
    # diffusers UNet
    "down_blocks", "mid_block", "up_blocks", "attentions", "resnets", "downsamplers", "upsamplers",
    "transformer_blocks", "attn1", "attn2", "to_q", "to_k", "to_v", "to_out", "ff", "net", "proj",
    "proj_in", "proj_out", "norm", "norm1", "norm2", "norm3", "conv", "conv1", "conv2", "conv_shortcut",
    "time_emb_proj", "conv_in", "conv_out", "conv_norm_out", "time_embedding", "linear_1", "linear_2",
    "add_embedding",
    # original (compvis/SGM) UNet
    "input_blocks", "middle_block", "output_blocks", "in_layers", "out_layers", "emb_layers",
    "skip_connection", "op", "time_embed", "label_emb", "out",
    # HF CLIP
    "text_model", "encoder", "layers", "self_attn", "q_proj", "k_proj", "v_proj", "out_proj", "mlp",
    "fc1", "fc2", "embeddings", "final_layer_norm", "layer_norm1", "layer_norm2", "text_projection",
    "token_embedding", "position_embedding",
}
_MAX_PARTS = max(w.count("_") + 1 for w in _WORDS)
_KOHYA_PREFIX = re.compile(r"^lora_(unet|te1|te2|te)_(.+)$")
_COMPVIS_HEADS = ("input_blocks.", "middle_block.", "output_blocks.", "time_embed.", "label_emb.", "out.")


class UnknownName(ValueError):
    """A module name or path this mapping cannot place (reported to the user, never guessed)."""


def dotted(underscored: str) -> str:
    """``down_blocks_0_attentions_0_proj_in`` -> ``down_blocks.0.attentions.0.proj_in`` (longest known words first)."""
    tokens = underscored.split("_")
    parts, i = [], 0
    while i < len(tokens):
        for n in range(min(_MAX_PARTS, len(tokens) - i), 0, -1):
            word = "_".join(tokens[i : i + n])
            if word in _WORDS or (n == 1 and word.isdigit()):
                parts.append(word)
                i += n
                break
        else:
            raise UnknownName(f"'{tokens[i]}' in '{underscored}' is not part of any SD/SDXL UNet or CLIP module name")
    return ".".join(parts)


def check_path(path: str) -> str:
    """A dotted path made only of known module words and indices (guards the diffusers -> kohya direction)."""
    for part in path.split("."):
        if not (part in _WORDS or part.isdigit()):
            raise UnknownName(f"'{part}' in '{path}' is not part of any SD/SDXL UNet or CLIP module name")
    return path


def is_compvis_path(path: str) -> bool:
    return path.startswith(_COMPVIS_HEADS)


def strip_text_model(path: str) -> str:
    return path[len("text_model.") :] if path.startswith("text_model.") else path


def parse_kohya_name(name: str, layout: UNetLayout | None = None) -> tuple[str, str, bool]:
    """kohya module name -> (component, diffusers path, was_compvis).

    ``lora_te_``/``lora_te1_`` are the (first) text encoder, ``lora_te2_`` the second.
    Original-layout UNet names are translated with ``layout`` (default: the SDXL layout).
    """
    m = _KOHYA_PREFIX.match(name)
    if m is None:
        raise UnknownName(f"'{name}' does not start with lora_unet_, lora_te_, lora_te1_ or lora_te2_")
    head, rest = m.groups()
    path = dotted(rest)
    if head == "unet":
        if is_compvis_path(path):
            try:
                return UNET, from_compvis(path, layout or SDXL_LAYOUT), True
            except UnknownModulePath as e:
                raise UnknownName(str(e)) from None
        return UNET, path, False
    return (TE2 if head == "te2" else TE), strip_text_model(path), False


def kohya_name(component: str, path: str, sdxl: bool, layout: UNetLayout | None = None) -> str:
    """(component, diffusers path) -> the kohya module name networks.lora gives that module."""
    if component == UNET:
        if sdxl:
            try:
                path = to_compvis(path, layout or SDXL_LAYOUT)
            except UnknownModulePath as e:
                raise UnknownName(str(e)) from None
        return "lora_unet_" + path.replace(".", "_")
    if component not in (TE, TE2):
        raise UnknownName(f"unknown component '{component}'")
    if component == TE2 and not sdxl:
        raise UnknownName("a second text encoder (text_encoder_2) exists only in SDXL")
    prefix = "lora_te2" if component == TE2 else ("lora_te1" if sdxl else "lora_te")
    return f"{prefix}_text_model_{strip_text_model(path).replace('.', '_')}"


def family_evidence(unet_paths, components) -> tuple[bool, bool]:
    """(looks SDXL, looks SD1/SD2) from diffusers UNet paths and the components present.

    SDXL: a second text encoder, or a transformer depth above 1 (SDXL's down block 2 and
    mid/up blocks; SD1/SD2 have depth 1). SD1/SD2: attention in down block 0, or a fourth
    down/up block. A partial LoRA may show neither: the caller then asks for the model.
    """
    paths = list(unet_paths)
    sdxl = TE2 in components or any(re.search(r"\.transformer_blocks\.[1-9]", p) for p in paths)
    sd = any(p.startswith(("down_blocks.0.attentions.", "down_blocks.3.", "up_blocks.3.")) for p in paths)
    return sdxl, sd


def guess_lora_family(names) -> str:
    """Best guess of the base family a LoRA was trained on, from its module names."""
    names = list(names)
    if any(n.startswith(("lora_te1_", "lora_te2_")) or "input_blocks" in n or "output_blocks" in n for n in names):
        return "SDXL"
    return "SD1.x/SD2.x"
