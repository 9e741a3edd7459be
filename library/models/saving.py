"""Save a BaseModel as an original-layout single-file .safetensors (what A1111/ComfyUI load).

The exact reverse of single_file.py, written here because diffusers converts only one
way. The diffusers configs go into the metadata (``lorasmith.configs``) so any model,
tiny ones included, loads back without guessing.
"""

from __future__ import annotations

import json
import os

import torch

from library.models.base_model import BaseModel
from library.models.checkpoint_file import write_safetensors_atomic
from library.models.keys_clip import model_state_dict
from library.models.layout import fill_missing_extras, parts_for
from library.models.single_file import CONFIGS_KEY, FAMILY_KEY


def original_state_dict(model: BaseModel) -> dict[str, torch.Tensor]:
    """All of ``model``'s tensors under original-layout keys (no copies; works on meta models too)."""
    out: dict[str, torch.Tensor] = {}
    nets = [model.unet, model.vae, *model.text_encoders]
    for part, net in zip(parts_for(model.configs), nets):
        sd = model_state_dict(net) if part.index is not None else net.state_dict()
        for key, value in part.keys.to_original(sd).items():
            out[part.prefix + key] = value
    for key, value in model.extras.items():
        out.setdefault(key, value)
    fill_missing_extras(model.configs, out)
    return out


def save_base_model(
    model: BaseModel,
    path: str | os.PathLike,
    dtype: torch.dtype | None = None,
    metadata: dict[str, str] | None = None,
) -> None:
    """Write ``model`` to ``path`` (.safetensors), floats cast to ``dtype`` if given; atomic."""
    meta = dict(metadata or {})
    bad = [k for k, v in meta.items() if not isinstance(k, str) or not isinstance(v, str)]
    if bad:
        raise TypeError(f"safetensors metadata keys and values must be str; not for {bad[:3]}")
    meta[CONFIGS_KEY] = json.dumps(model.configs, sort_keys=True)
    meta[FAMILY_KEY] = model.family
    tensors = {}
    for key, value in original_state_dict(model).items():
        value = value.detach()
        if dtype is not None and value.is_floating_point():
            value = value.to(dtype)
        tensors[key] = value.to("cpu").contiguous()
    write_safetensors_atomic(path, tensors, meta)
