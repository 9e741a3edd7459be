"""Base models for training: load/save SD1/SD2/SDXL offline, shipped configs and tokenizers.

See docs/models.md for the file formats, key layouts and errors.
"""

from library.models.base_model import BaseModel, assemble
from library.models.build import Components, build_models
from library.models.configs import FAMILIES, full_size_configs, scheduler_config, tiny_configs
from library.models.errors import ModelLoadError, ModelSaveError
from library.models.loading import load_base_model
from library.models.saving import original_state_dict, save_base_model
from library.models.single_file import load_original_state_dict
from library.models.tokenizers import clip_tokenizer

__all__ = [
    "BaseModel",
    "Components",
    "FAMILIES",
    "ModelLoadError",
    "ModelSaveError",
    "assemble",
    "build_models",
    "clip_tokenizer",
    "full_size_configs",
    "load_base_model",
    "load_original_state_dict",
    "original_state_dict",
    "save_base_model",
    "scheduler_config",
    "tiny_configs",
]
