"""Draw the small demo dataset shipped in examples/demo (kohya folders, captions, reg images).

Procedural and deterministic, so the shipped files can be regenerated and checked:
``img/10_sks shape/`` holds red circles ("sks shape") in several sizes and aspect ratios,
``reg/1_shape/`` holds other shapes in other colours (regularisation, class "shape").

    python tools/make_demo_dataset.py [--out examples/demo]
"""

from __future__ import annotations

import argparse
import os
import random

import sys
from pathlib import Path

from PIL import Image, ImageDraw

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from library import atomic  # noqa: E402

BACKGROUNDS = [("blue", (40, 70, 160)), ("green", (40, 130, 60)), ("grey", (120, 120, 120)), ("yellow", (220, 200, 60))]
OTHER = [("square", (30, 30, 200)), ("triangle", (20, 160, 40)), ("square", (200, 200, 200)), ("triangle", (250, 140, 0))]
SIZES = [(64, 64), (64, 80), (80, 64), (64, 64)]


def _save_png(img: Image.Image, path: str) -> None:
    with atomic.atomic_path(path) as tmp:
        img.save(tmp, format="PNG")


def draw(shape: str, colour, bg, size, rng: random.Random) -> Image.Image:
    w, h = size
    img = Image.new("RGB", size, bg)
    d = ImageDraw.Draw(img)
    r = rng.randint(min(w, h) // 5, min(w, h) // 3)
    cx, cy = rng.randint(r, w - r), rng.randint(r, h - r)
    if shape == "circle":
        d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=colour)
    elif shape == "square":
        d.rectangle([cx - r, cy - r, cx + r, cy + r], fill=colour)
    else:
        d.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=colour)
    return img


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples", "demo"))
    args = ap.parse_args()
    rng = random.Random(1234)
    train = os.path.join(args.out, "img", "10_sks shape")
    reg = os.path.join(args.out, "reg", "1_shape")
    os.makedirs(train, exist_ok=True)
    os.makedirs(reg, exist_ok=True)
    for i in range(8):
        bg_name, bg = BACKGROUNDS[i % 4]
        _save_png(draw("circle", (210, 30, 30), bg, SIZES[i % 4], rng), os.path.join(train, f"{i:02d}.png"))
        atomic.write_text(os.path.join(train, f"{i:02d}.txt"), f"sks shape, red circle, {bg_name} background\n")
    for i in range(8):
        shape, colour = OTHER[i % 4]
        bg_name, bg = BACKGROUNDS[(i + 1) % 4]
        _save_png(draw(shape, colour, bg, SIZES[i % 4], rng), os.path.join(reg, f"{i:02d}.png"))
        atomic.write_text(os.path.join(reg, f"{i:02d}.txt"), f"shape, {shape}, {bg_name} background\n")
    with atomic.atomic_write(os.path.join(args.out, "prompts.txt"), "w") as f:
        f.write("# sample prompts, kohya syntax\n")
        f.write("sks shape, red circle, blue background --w 64 --h 64 --d 1 --s 8 --l 5\n")
        f.write("sks shape, green background --n blurry --w 64 --h 64 --d 2 --s 8 --l 5\n")
    print(f"demo dataset written to {args.out}")


if __name__ == "__main__":
    main()
