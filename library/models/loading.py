"""``load_base_model``: one entry point for single files and diffusers folders."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from library.models.base_model import BaseModel
from library.models.configs import FAMILIES
from library.models.diffusers_folder import is_diffusers_folder, load_diffusers_folder
from library.models.errors import ModelLoadError
from library.models.single_file import load_single_file


def load_base_model(
    path: str | os.PathLike,
    *,
    family: str | None = None,
    v_parameterization: bool | None = None,
    dtype: torch.dtype | None = torch.float32,
    device: str | torch.device = "cpu",
    on_part=None,
) -> BaseModel:
    """Load an SD1/SD2/SDXL base model from a single file or a diffusers folder, offline.

    ``family`` ('sd1' | 'sd2' | 'sdxl') skips detection but must match the file.
    ``v_parameterization`` True/False sets the prediction type; None keeps what the
    file declares (our metadata, modelspec, the folder's scheduler), else epsilon. SD2
    768-v checkpoints cannot be told from 512 ones by their weights: pass True for them.
    ``dtype`` applies to floating tensors (None keeps the file's); fp32 by default.
    ``on_part(name, module, family)`` is called as each part is ready, the VAE first ("VAE", "UNet", "text encoder",
    "text encoder 1"/"2" for SDXL; a diffusers folder reports its VAE only), so latent caching can start while the
    rest loads.
    Raises ModelLoadError (one line: file, problem, fix) for anything the user can fix.
    """
    if family is not None and family not in FAMILIES:
        raise ModelLoadError(f"family '{family}' is not one of {', '.join(FAMILIES)}; fix the family option")
    p = Path(path)
    kwargs = dict(family=family, v_parameterization=v_parameterization, dtype=dtype, device=device, on_part=on_part)
    if p.is_dir():
        if not is_diffusers_folder(p):
            raise ModelLoadError(
                f"{p}: a folder but not a diffusers model (no unet/ inside); pass a .safetensors checkpoint "
                "or a diffusers folder with unet/, vae/ and text_encoder/"
            )
        return load_diffusers_folder(p, **kwargs)
    if not p.exists():
        raise ModelLoadError(
            f"{p}: no such file or folder; check the model path (models load from disk only, never from the Hub)"
        )
    return load_single_file(p, **kwargs)
