"""What a caller asks of a base-model load: family, prediction type, dtype, device, the per-part callback.

Why a record of its own: the single-file loader, the diffusers-folder loader and the in-memory state-dict
loader take the same five choices with the same defaults; written once here, ``load_base_model`` builds one
and every loader reads it, so a default (fp32 on the CPU) cannot differ between them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Union

import torch


@dataclass(frozen=True)
class LoadRequest:
    """``family`` ('sd1' | 'sd2' | 'sdxl') skips detection but must match the file. ``v_parameterization``
    True/False sets the prediction type; None keeps what the file declares, else epsilon. ``dtype`` applies to
    floating tensors (None keeps the file's). ``on_part(name, module, family)`` is called as each part is ready,
    the VAE first."""

    family: Optional[str] = None
    v_parameterization: Optional[bool] = None
    dtype: Optional[torch.dtype] = torch.float32
    device: Union[str, torch.device] = "cpu"
    on_part: Optional[Callable] = None
