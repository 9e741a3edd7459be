"""``load_base_model``: one entry point for single files and diffusers folders."""

from __future__ import annotations

import os
from pathlib import Path

from library.models.base_model import BaseModel
from library.models.configs import FAMILIES
from library.models.diffusers_folder import is_diffusers_folder, load_diffusers_folder
from library.models.errors import ModelLoadError
from library.models.load_request import LoadRequest
from library.models.single_file import load_single_file


def load_base_model(path: str | os.PathLike, **request) -> BaseModel:
    """Load an SD1/SD2/SDXL base model from a single file or a diffusers folder, offline.

    ``request``: the fields of :class:`LoadRequest` (library/models/load_request.py), by name:
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
    wanted = LoadRequest(**request)
    if wanted.family is not None and wanted.family not in FAMILIES:
        raise ModelLoadError(f"family '{wanted.family}' is not one of {', '.join(FAMILIES)}; fix the family option")
    p = Path(path)
    if p.is_dir():
        if not is_diffusers_folder(p):
            raise ModelLoadError(
                f"{p}: a folder but not a diffusers model (no unet/ inside); pass a .safetensors checkpoint "
                "or a diffusers folder with unet/, vae/ and text_encoder/"
            )
        return load_diffusers_folder(p, wanted)
    if not p.exists():
        raise ModelLoadError(
            f"{p}: no such file or folder; check the model path (models load from disk only, never from the Hub)"
        )
    return load_single_file(p, wanted)
