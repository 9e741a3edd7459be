"""The synthetic shapes world: coloured shapes on a plain dark background, 64 px, with captions.

One renderer serves the base-model builder (tools/make_shapes_model.py), the LoRA concept
test (a purple star with a white outline, a colour and an outline the base never saw) and
the scorer's own tests, so what the scorer is tested on is what the models are trained on.
Everything is deterministic from a seed (``random.Random``), independent of torch.
"""

from __future__ import annotations

import colorsys
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
# Rare tokens the concept tests bind to a concept: never in a base caption, not even as an unknown word.
HELD_OUT_WORDS = ("sks", "ohwx", "zwx")
# Centres (x, y) of the five named positions in a 64 px image.
POSITIONS = {
    "top left": (19, 19),
    "top right": (45, 19),
    "bottom left": (19, 45),
    "bottom right": (45, 45),
    "center": (32, 32),
}
RADIUS = (13.0, 16.0)  # big enough that a star's points survive the VAE's 8x8 latents
JITTER = 1.5
STAR_INNER = 0.5  # inner/outer radius of the five-pointed star


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
    """The 64 px RGB image of ``spec``; ``colour`` is a name or an ``(r, g, b)`` tuple."""
    s = SUPERSAMPLE
    img = Image.new("RGB", (SIZE * s, SIZE * s), BACKGROUND)
    draw = ImageDraw.Draw(img)
    fill = ALL_COLOURS[spec.colour] if isinstance(spec.colour, str) else tuple(spec.colour)
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


def base_dataset(n: int, seed: int = 0, star_share: float | None = None,
                 star_colours: dict[str, float] | None = None,
                 other_colours: dict[str, float] | None = None) -> list[ShapeSpec]:
    """``n`` specs of the base world (every shape x base colour x position), deterministic.

    ``star_share`` (e.g. 0.4) draws that fraction as stars and the rest evenly from the other
    shapes: the star is the hardest shape at 8x8 latents and the one the concept test needs.
    ``star_colours`` / ``other_colours`` (name -> weight) give the stars / the other shapes a
    colour prior instead of even colours: a star prior gives the colourless class prompt
    ``a star`` a mode to commit to (as real SD's classes have), and the other shapes' weights
    can keep the world's mean colour neutral, which classifier-free guidance pushes away from."""
    rng = random.Random(seed)
    if star_share is None:
        return [random_spec(rng) for _ in range(n)]
    others = tuple(s for s in SHAPES if s != "star")
    out = []
    for _ in range(n):
        star = rng.random() < star_share
        weights = star_colours if star else other_colours
        colours = tuple(COLOURS)
        if weights:
            names, values = zip(*weights.items())
            colours = (rng.choices(names, values)[0],)
        out.append(random_spec(rng, shapes=("star",) if star else others, colours=colours))
    return out


def vae_specs(n: int, seed: int = 0) -> list[ShapeSpec]:
    """Images for the *autoencoder* only: any hue, saturation and brightness, a third with a
    white outline. A real SD VAE has seen every colour; the UNet's captions are what lack the
    concept, so the VAE must be able to draw purple and outlines the UNet never learnt."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        spec = random_spec(rng, outline="white" if rng.random() < 0.33 else None)
        h, sat, val = rng.random(), rng.uniform(0.5, 1.0), rng.uniform(0.55, 1.0)
        rgb = tuple(int(round(255 * c)) for c in colorsys.hsv_to_rgb(h, sat, val))
        out.append(ShapeSpec(spec.shape, rgb, spec.position, spec.x, spec.y, spec.radius, spec.outline))
    return out


def concept_specs(n: int, seed: int = 0) -> list[ShapeSpec]:
    """``n`` images of the LoRA concept: a purple five-pointed star with a white outline."""
    rng = random.Random(seed)
    return [random_spec(rng, shapes=("star",), colours=("purple",), outline="white") for _ in range(n)]
