"""Base models for training: load/save SD1/SD2/SDXL offline, shipped configs and tokenizers.

See docs/models.md for the file formats, key layouts and errors.

The names below are imported on first use (PEP 562), so a light submodule such as
``library.models.unet_layout`` (the UNet layout map LoRA key naming needs) can be imported
without loading diffusers and transformers.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "BaseModel": "base_model",
    "assemble": "base_model",
    "Components": "build",
    "build_models": "build",
    "FAMILIES": "configs",
    "full_size_configs": "configs",
    "scheduler_config": "configs",
    "tiny_configs": "configs",
    "ModelLoadError": "errors",
    "ModelSaveError": "errors",
    "load_base_model": "loading",
    "original_state_dict": "saving",
    "save_base_model": "saving",
    "load_original_state_dict": "single_file",
    "clip_tokenizer": "tokenizers",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
