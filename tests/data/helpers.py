"""Helpers for the datasets-layer tests: tiny images and kohya folders built in tmp_path."""

from __future__ import annotations

import os

import numpy as np
from PIL import Image


def make_image(path, size=(64, 48), seed=0, fmt=None, **save_kw):
    """Write a small noise image of ``size`` (w, h); returns the path."""
    os.makedirs(os.path.dirname(str(path)) or ".", exist_ok=True)
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(arr).save(str(path), format=fmt, **save_kw)
    return str(path)


def write(path, text, encoding="utf-8"):
    os.makedirs(os.path.dirname(str(path)) or ".", exist_ok=True)
    with open(path, "wb") as f:
        f.write(text.encode(encoding) if isinstance(text, str) else text)
    return str(path)


def make_folder(root, name, n, size=(64, 48), caption=None, ext=".txt", start_seed=0):
    """``root/name`` with ``n`` PNGs (and captions when ``caption`` is given)."""
    folder = os.path.join(str(root), name)
    for i in range(n):
        make_image(os.path.join(folder, f"{i:03d}.png"), size, seed=start_seed + i)
        if caption is not None:
            write(os.path.join(folder, f"{i:03d}{ext}"), caption.format(i=i))
    return folder
