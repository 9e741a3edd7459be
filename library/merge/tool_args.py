"""Arguments the LoRA maths tools (resize, extract, merge) share, so no tool imports another.

``--device`` must name a device that exists here before a model or file is read (the check is
library/devices.py's); ``--save_precision`` names the dtype the output is written in.
"""

from __future__ import annotations

import torch

from library.devices import check_device  # noqa: F401  (re-exported: the tools import it from here)

PRECISIONS = {"float": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
