"""Renaming the head of a dotted key path by a table: the one rule every key layout map uses.

Why a leaf of its own: the UNet layout map (unet_layout.py), the VAE keys (keys_vae.py) and others rename
``<known head>.<rest>`` by a table of heads; the longest matching head wins and the rest is kept. Written
once, torch-free, so the light UNet layout map can import it.
"""

from __future__ import annotations

from typing import Mapping, Optional


def rename_head(path: str, table: Mapping[str, str]) -> Optional[str]:
    """``path`` with its longest head found in ``table`` (the whole path or a dotted prefix) renamed; None if
    no head matches. ``rename_head("norm1.weight", {"norm1": "in_layers.0"}) == "in_layers.0.weight"``."""
    best = None
    for head in table:
        if (path == head or path.startswith(head + ".")) and (best is None or len(head) > len(best)):
            best = head
    if best is None:
        return None
    return table[best] + path[len(best):]
