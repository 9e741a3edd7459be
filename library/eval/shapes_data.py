"""The synthetic shapes world: coloured shapes on a plain dark background, 64 px, with captions.

One renderer serves the base-model builder (tools/make_shapes_model.py), the LoRA concept
test (a purple star with a white outline, a colour and an outline the base never saw) and
the scorer's own tests, so what the scorer is tested on is what the models are trained on.
Everything is deterministic from a seed (``random.Random``), independent of torch.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from PIL import Image, ImageDraw

SIZE = 64
SUPERSAMPLE = 4  # drawn at 4x and box-filtered down: smooth edges, like a photo of a shape
BACKGROUND = (28, 28, 34)
SHAPES = ("circle", "square", "triangle", "star")
# Base-model palette: four well-separated hues. Purple is held out for the concept test.
COLOURS = {
    "red": (215, 40, 40),
    "yellow": (225, 205, 40),
    "green": (40, 175, 60),
    "blue": (45, 85, 225),
}
CONCEPT_COLOURS = {"purple": (150, 45, 205)}
ALL_COLOURS = {**COLOURS, **CONCEPT_COLOURS}
WHITE = (245, 245, 245)
# Centres (x, y) of the five named positions in a 64 px image.
POSITIONS = {
    "top left": (18, 18),
    "top right": (46, 18),
    "bottom left": (18, 46),
    "bottom right": (46, 46),
    "center": (32, 32),
}
RADIUS = (11.0, 14.0)
JITTER = 2.0
STAR_INNER = 0.45  # inner/outer radius of the five-pointed star


@dataclass(frozen=True)
class ShapeSpec:
    """One image: what is drawn where (centre ``x, y`` and ``radius`` in 64 px units)."""

    shape: str
    colour: str
    position: str
    x: float
    y: float
    radius: float
    outline: str | None = None

    def caption(self, with_colour: bool = True, with_position: bool = True) -> str:
        """"a red circle, top left"; parts may be left out ("a circle", "a red circle")."""
        text = f"a {self.colour} {self.shape}" if with_colour else f"a {self.shape}"
        return f"{text}, {self.position}" if with_position else text


def polygon(shape: str, x: float, y: float, r: float) -> list[tuple[float, float]] | None:
    """Vertices of an upright square / triangle / star of radius ``r`` at (x, y); None for a circle."""
    if shape == "circle":
        return None
    if shape == "square":
        h = r * 0.85
        return [(x - h, y - h), (x + h, y - h), (x + h, y + h), (x - h, y + h)]
    if shape == "triangle":
        return [(x, y - r), (x + r, y + r * 0.8), (x - r, y + r * 0.8)]
    if shape == "star":
        pts = []
        for i in range(10):
            rad = r if i % 2 == 0 else r * STAR_INNER
            a = -math.pi / 2 + i * math.pi / 5
            pts.append((x + rad * math.cos(a), y + rad * math.sin(a)))
        return pts
    raise ValueError(f"unknown shape {shape!r}; known: {SHAPES}")


def render(spec: ShapeSpec) -> Image.Image:
    """The 64 px RGB image of ``spec``."""
    s = SUPERSAMPLE
    img = Image.new("RGB", (SIZE * s, SIZE * s), BACKGROUND)
    draw = ImageDraw.Draw(img)
    fill = ALL_COLOURS[spec.colour]
    outline = WHITE if spec.outline == "white" else None
    width = int(round(2.0 * s)) if outline else 0
    pts = polygon(spec.shape, spec.x * s, spec.y * s, spec.radius * s)
    if pts is None:
        r = spec.radius * s
        box = [spec.x * s - r, spec.y * s - r, spec.x * s + r, spec.y * s + r]
        draw.ellipse(box, fill=fill, outline=outline, width=width)
    else:
        draw.polygon(pts, fill=fill, outline=outline, width=width)
    return img.resize((SIZE, SIZE), Image.Resampling.BOX)


def random_spec(rng: random.Random, shapes=SHAPES, colours=tuple(COLOURS), positions=tuple(POSITIONS),
                outline: str | None = None) -> ShapeSpec:
    """A random shape of the given kinds, jittered around its named position."""
    shape, colour, position = rng.choice(shapes), rng.choice(colours), rng.choice(positions)
    cx, cy = POSITIONS[position]
    return ShapeSpec(
        shape, colour, position,
        cx + rng.uniform(-JITTER, JITTER), cy + rng.uniform(-JITTER, JITTER),
        rng.uniform(*RADIUS), outline,
    )


def base_dataset(n: int, seed: int = 0) -> list[ShapeSpec]:
    """``n`` specs of the base world (every shape x base colour x position), deterministic."""
    rng = random.Random(seed)
    return [random_spec(rng) for _ in range(n)]


def concept_specs(n: int, seed: int = 0) -> list[ShapeSpec]:
    """``n`` images of the LoRA concept: a purple five-pointed star with a white outline."""
    rng = random.Random(seed)
    return [random_spec(rng, shapes=("star",), colours=("purple",), outline="white") for _ in range(n)]
