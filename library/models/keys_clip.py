"""Text-encoder key names: original checkpoint layouts <-> transformers CLIP models.

Two original layouts exist:

* HF layout (SD1 ``cond_stage_model.transformer.``, SDXL CLIP-L
  ``conditioner.embedders.0.transformer.``): already transformers' names, with or
  without the ``text_model.`` head (old files lack it). Only ``position_ids`` is dropped.
* OpenCLIP layout (SD2 ``cond_stage_model.model.``, SDXL bigG
  ``conditioner.embedders.1.model.``): ``transformer.resblocks.N`` with a fused
  ``attn.in_proj_weight [3h, h]`` (split into q/k/v here), ``positional_embedding``,
  ``ln_final`` and ``text_projection [h, p]`` applied as ``x @ P`` (so the HF Linear
  weight is ``P.T``).

Keys on the transformers side are "canonical": always with the ``text_model.`` head, as
CLIPTextModelWithProjection names them and as checkpoints store them. transformers 5's
CLIPTextModel drops that head; :func:`model_state_dict` / :func:`to_model_keys` translate
at the model boundary.

Tensors the model does not use but a faithful file keeps (SD2's 24th OpenCLIP block,
``text_projection`` without a projection layer, ``logit_scale``) are classified "extra".
"""

from __future__ import annotations

import torch

from library.models.errors import UnmappedKey

HEAD = "text_model."
PROJ = "text_projection.weight"
MAP, EXTRA, IGNORE = "map", "extra", "ignore"


def canonical(model_key: str) -> str:
    """A transformers CLIP state-dict key -> canonical (``text_model.``-headed) key."""
    return model_key if model_key.startswith(HEAD) or model_key == PROJ else HEAD + model_key


def model_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The model's state dict under canonical keys."""
    return {canonical(k): v for k, v in model.state_dict().items()}


def to_model_keys(sd: dict[str, torch.Tensor], model_keys: set[str]) -> dict[str, torch.Tensor]:
    """Canonical keys -> the model's own keys (strips ``text_model.`` where the model has none)."""
    out = {}
    for k, v in sd.items():
        out[k if k in model_keys or not k.startswith(HEAD) else k[len(HEAD) :]] = v
    return out


class HFClipKeys:
    """HF-layout text encoder in an original checkpoint (keys without the component prefix)."""

    def __init__(self, has_projection: bool):
        self.has_projection = has_projection

    def classify(self, key: str) -> str:
        if key.endswith("embeddings.position_ids"):
            return IGNORE
        if key == PROJ and not self.has_projection:
            return EXTRA
        return MAP

    def from_original(self, key: str, tensor: torch.Tensor) -> list[tuple[str, torch.Tensor]]:
        if key == PROJ:
            return [(key, tensor)]
        if not key.startswith(HEAD):
            key = HEAD + key
        if not key.startswith((HEAD + "embeddings.", HEAD + "encoder.layers.", HEAD + "final_layer_norm.")):
            raise UnmappedKey(key)
        return [(key, tensor)]

    def original_key(self, key: str) -> str:
        return key

    def to_original(self, sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return dict(sd)


_OPENCLIP_TOP = {
    "token_embedding.weight": HEAD + "embeddings.token_embedding.weight",
    "positional_embedding": HEAD + "embeddings.position_embedding.weight",
    "ln_final.weight": HEAD + "final_layer_norm.weight",
    "ln_final.bias": HEAD + "final_layer_norm.bias",
}
_OPENCLIP_TOP_REV = {v: k for k, v in _OPENCLIP_TOP.items()}
_OPENCLIP_BLOCK = {
    "ln_1": "layer_norm1",
    "ln_2": "layer_norm2",
    "attn.out_proj": "self_attn.out_proj",
    "mlp.c_fc": "mlp.fc1",
    "mlp.c_proj": "mlp.fc2",
}
_OPENCLIP_BLOCK_REV = {v: k for k, v in _OPENCLIP_BLOCK.items()}
_RESBLOCK = "transformer.resblocks."
_LAYER = HEAD + "encoder.layers."


class OpenClipKeys:
    """OpenCLIP-layout text encoder in an original checkpoint (keys without the component prefix).

    ``num_layers`` is the HF model's depth; deeper resblocks (SD2's last one, which SD
    never uses) are extras.
    """

    def __init__(self, num_layers: int, has_projection: bool):
        self.num_layers = num_layers
        self.has_projection = has_projection

    def classify(self, key: str) -> str:
        if key == "attn_mask":
            return IGNORE
        if key == "logit_scale" or (key == "text_projection" and not self.has_projection):
            return EXTRA
        if key.startswith(_RESBLOCK):
            idx = key[len(_RESBLOCK) :].split(".", 1)[0]
            if idx.isdigit() and int(idx) >= self.num_layers:
                return EXTRA
        return MAP

    def from_original(self, key: str, tensor: torch.Tensor) -> list[tuple[str, torch.Tensor]]:
        if key in _OPENCLIP_TOP:
            return [(_OPENCLIP_TOP[key], tensor)]
        if key == "text_projection":
            return [(PROJ, tensor.t().contiguous())]
        if not key.startswith(_RESBLOCK):
            raise UnmappedKey(key)
        idx, _, rest = key[len(_RESBLOCK) :].partition(".")
        if not idx.isdigit():
            raise UnmappedKey(key)
        layer = f"{_LAYER}{idx}."
        if rest in ("attn.in_proj_weight", "attn.in_proj_bias"):
            kind = rest.rsplit("_", 1)[1]
            if tensor.shape[0] % 3:
                raise UnmappedKey(key)
            # Cloned so q/k/v own their storage (safetensors refuses to save shared tensors).
            return [(f"{layer}self_attn.{n}_proj.{kind}", t.clone()) for n, t in zip("qkv", tensor.chunk(3, dim=0))]
        module, _, param = rest.rpartition(".")
        if module not in _OPENCLIP_BLOCK:
            raise UnmappedKey(key)
        return [(f"{layer}{_OPENCLIP_BLOCK[module]}.{param}", tensor)]

    def original_key(self, key: str) -> str:
        """The original name holding model ``key`` (q/k/v all live in ``in_proj_*``)."""
        if key in _OPENCLIP_TOP_REV:
            return _OPENCLIP_TOP_REV[key]
        if key == PROJ:
            return "text_projection"
        if key.startswith(_LAYER):
            idx, _, rest = key[len(_LAYER) :].partition(".")
            module, _, param = rest.rpartition(".")
            if module in ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"):
                return f"{_RESBLOCK}{idx}.attn.in_proj_{param}"
            if module in _OPENCLIP_BLOCK_REV:
                return f"{_RESBLOCK}{idx}.{_OPENCLIP_BLOCK_REV[module]}.{param}"
        raise UnmappedKey(key)

    def to_original(self, sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Every tensor under its ``original_key``; q/k/v become one ``in_proj`` tensor (made at q)."""
        out: dict[str, torch.Tensor] = {}
        for key, tensor in sd.items():
            name = self.original_key(key)
            if key == PROJ:
                tensor = tensor.t().contiguous()
            elif ".attn.in_proj_" in name:
                if ".self_attn.q_proj." not in key:
                    continue
                tensor = torch.cat([sd[key.replace(".q_proj.", f".{n}_proj.")] for n in "qkv"], dim=0)
            out[name] = tensor
        return out
