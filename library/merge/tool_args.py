"""Argument checks the LoRA maths tools (resize, extract) share, so no tool imports another.

``--device`` must name a device that exists here before a model or file is read;
``--save_precision`` names the dtype the output is written in.
"""

from __future__ import annotations

import torch

from library.errors import UserError

PRECISIONS = {"float": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def check_device(device: str | None) -> str:
    """The device to compute on, refused with a clear message when it does not exist here."""
    device = device or "cpu"
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise UserError(f"--device {device}: not a torch device; use cpu or cuda (cuda:0, ...)") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"--device {device}: CUDA is not available in this Python; use --device cpu")
    return device
