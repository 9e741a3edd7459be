"""The one ``--device`` check and the one precision-name -> torch dtype map.

``check_device``: a device name that exists here, refused before any file or model is read (the tools that
compute on a chosen device: resize, extract and merge LoRAs, captioning). ``dtype_of``: what
``--mixed_precision``, ``--save_precision`` and the tools' precision options name (the names are
library/vocabulary.py's). torch is imported inside, so importing this module stays cheap.
"""

from __future__ import annotations

from library.errors import UserError
from library.vocabulary import PRECISION_DTYPES


def check_device(name: str | None, default: str = "cpu") -> str:
    """``name`` when that torch device exists here; without a name, ``default`` ("auto": cuda when available, else cpu)."""
    import torch

    if not name:
        return ("cuda" if torch.cuda.is_available() else "cpu") if default == "auto" else default
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UserError(f"--device {name} is not a device name; use cpu, cuda or cuda:1") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"--device {name}: no CUDA GPU is available here; use --device cpu")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise UserError(f"--device {name}: there are only {torch.cuda.device_count()} GPU(s) (cuda:0 ...)")
    return name


def dtype_of(name: str | None):
    """The torch dtype a precision name means (``float``/``fp32``/``no`` -> float32, ``fp16``, ``bf16`` ...);
    None for None (callers keep the weights' own dtype). Names are checked by the option's choices first."""
    if name is None:
        return None
    import torch

    return getattr(torch, PRECISION_DTYPES[name])
