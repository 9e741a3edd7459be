"""Draw the small demo datasets shipped in examples/ (kohya folders, captions, sample prompts).

Procedural and deterministic, so the shipped files can be regenerated and checked.
examples/demo (the tiny model's data, used by the tests, the GUI and the ComfyUI node):
``img/10_sks shape/`` holds red circles ("sks shape") in several sizes and aspect ratios,
``reg/1_shape/`` holds other shapes in other colours (regularisation, class "shape").
examples/shapes_demo (``--shapes``; scripts/demo.sh trains it on the shapes base model):
``img/10_sks star/`` holds the quality test's concept, purple stars with a white outline that
the base never saw; the demo fills its reg folder with the base's own "a star" images.

    python tools/make_demo_dataset.py [--out examples/demo]
    python tools/make_demo_dataset.py --shapes [--out examples/shapes_demo]
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


EXAMPLES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples")


def write_shapes_demo(out: str) -> None:
    """The concept of tests/quality/test_concept_lora.py (same images, same seed) with captions, and the
    sample prompts whose images the demo reads back step by step (library/eval/sample_progress.py)."""
    from library.eval.concept_run import CLASS_PROMPT, CONCEPT_PROMPT, CONCEPT_SEED, GEN
    from library.eval.shapes_data import SIZE, concept_specs, render

    train = os.path.join(out, "img", f"10_{CONCEPT_PROMPT}")
    os.makedirs(train, exist_ok=True)
    for i, spec in enumerate(concept_specs(12, seed=CONCEPT_SEED)):
        _save_png(render(spec), os.path.join(train, f"sks_{i:03d}.png"))
        atomic.write_text(os.path.join(train, f"sks_{i:03d}.txt"), CONCEPT_PROMPT + "\n")
    size = f"--w {SIZE} --h {SIZE} --s {GEN['steps']} --l {GEN['scale']:g}"
    lines = ["# sample prompts, kohya syntax: the concept (4 seeds) and its class (2 seeds)"]
    lines += [f"{CONCEPT_PROMPT} {size} --d {d}" for d in (1, 2, 3, 4)]
    lines += [f"{CLASS_PROMPT} {size} --d {d}" for d in (1, 2)]
    atomic.write_text(os.path.join(out, "prompts.txt"), "\n".join(lines) + "\n")
    print(f"shapes demo dataset written to {out}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=None, help="default: examples/demo, or examples/shapes_demo with --shapes")
    ap.add_argument("--shapes", action="store_true", help="the shapes demo (scripts/demo.sh) instead of the tiny one")
    args = ap.parse_args()
    if args.shapes:
        write_shapes_demo(args.out or os.path.join(EXAMPLES, "shapes_demo"))
        return
    args.out = args.out or os.path.join(EXAMPLES, "demo")
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
