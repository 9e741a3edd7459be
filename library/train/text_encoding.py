"""Training's own text conditioning: SDXL's size/crop vector. Captions are encoded by the inference
layer's encoder (library/inference/text_encoding.py), the one sample prompts and tools/gen_img.py use.
"""

from __future__ import annotations

import torch



def sdxl_time_ids(original_sizes, crop_top_lefts, target_sizes, device=None, dtype=torch.float32) -> torch.Tensor:
    """SDXL size conditioning [B, 6]: original (h, w), crop (top, left), target (h, w)."""
    rows = [[*o, *c, *t] for o, c, t in zip(original_sizes, crop_top_lefts, target_sizes)]
    return torch.tensor(rows, device=device, dtype=dtype)
