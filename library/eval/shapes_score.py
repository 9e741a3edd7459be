"""Read a shapes-world image back from its pixels: which shape, which colour, where.

No network and no torch: numpy only, so the verdict on a trained model cannot share a bug
with the model. The method, in order:

1. background = median colour of the 2 px border; foreground = pixels far from it;
   keep the largest 4-connected blob (specks of sampling noise are ignored).
2. shape from the outline's *symmetry order*: the blob's radius around its centroid as a function
   of angle, and the relative amplitudes of its 3rd, 4th and 5th harmonics (a triangle's three
   corners, a square's four, a star's five points); the strongest one names the shape, none above
   ``FOLD_MIN`` is a circle. A blob far from convex (*solidity* = area / convex-hull area below
   ``STAR_SOLIDITY``) is a star whatever its harmonics: only a star's notches make one.
   Why harmonics: a decoded sample is soft, and softness fills a star's notches. The first scorer
   named shapes by solidity and *extent* (area / bounding box); on rendered shapes blurred by a
   Gaussian of 2 px it read 66 of 89 stars as triangles (solidity 0.76-0.85) and at 2.5 px every
   star, while their 5th harmonic stayed at 0.08 or more and no other shape's passed 0.05
   (tests/eval/test_shapes_score.py). Solidity and extent are still reported.
3. colour from the hue histogram of the saturated foreground pixels (circular mean,
   nearest named hue); *outline* "white" when bright unsaturated pixels form a ring.
4. position from the blob's centroid (centre box or one of four quadrants).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

# Hue bins in degrees (start, end, name); red wraps around 0.
HUE_NAMES = (
    (0, 18, "red"), (18, 45, "orange"), (45, 75, "yellow"), (75, 165, "green"), (165, 200, "cyan"),
    (200, 255, "blue"), (255, 300, "purple"), (300, 340, "magenta"), (340, 360, "red"),
)
FG_DISTANCE = 60.0  # max channel difference from the background that makes a pixel foreground
MIN_AREA = 40  # smaller blobs are "nothing drawn"
STAR_SOLIDITY = 0.8  # a blob less convex than this is a star (a rendered star: 0.61-0.67)
FOLD_SHAPES = {3: "triangle", 4: "square", 5: "star"}  # symmetry order of the outline -> shape
# A harmonic's amplitude / mean radius below this is no corner (shapes blurred up to 2.5 px: their own >= 0.08,
# any other <= 0.05).
FOLD_MIN = 0.06
ANGLE_BINS = 64  # angular resolution of the radius profile
CENTRE_BOX = 8.0  # |dx|, |dy| below this (px from the middle) is "center"


@dataclass(frozen=True)
class Reading:
    """What the scorer saw; ``None`` where it could not tell."""

    shape: str | None
    colour: str | None
    position: str | None
    outline: str | None
    features: dict = field(default_factory=dict, compare=False)


def to_array(image) -> np.ndarray:
    """A PIL image, path or HxWx3 array -> float32 HxWx3 in 0..255."""
    if isinstance(image, np.ndarray):
        return image.astype(np.float32)
    if not isinstance(image, Image.Image):
        image = Image.open(image)
    return np.asarray(image.convert("RGB"), dtype=np.float32)


def foreground(rgb: np.ndarray) -> np.ndarray:
    """Boolean mask of pixels that differ from the border's median colour."""
    border = np.concatenate([rgb[:2].reshape(-1, 3), rgb[-2:].reshape(-1, 3),
                             rgb[:, :2].reshape(-1, 3), rgb[:, -2:].reshape(-1, 3)])
    bg = np.median(border, axis=0)
    return np.abs(rgb - bg).max(axis=2) > FG_DISTANCE


def largest_blob(mask: np.ndarray) -> np.ndarray:
    """The largest 4-connected component of ``mask`` (empty mask in, empty mask out)."""
    h, w = mask.shape
    seen = np.zeros_like(mask)
    best: list = []
    for y0, x0 in zip(*np.nonzero(mask)):
        if seen[y0, x0]:
            continue
        seen[y0, x0] = True
        blob, queue = [], deque([(y0, x0)])
        while queue:
            y, x = queue.popleft()
            blob.append((y, x))
            for ny, nx in ((y - 1, x), (y + 1, x), (y, x - 1), (y, x + 1)):
                if 0 <= ny < h and 0 <= nx < w and mask[ny, nx] and not seen[ny, nx]:
                    seen[ny, nx] = True
                    queue.append((ny, nx))
        if len(blob) > len(best):
            best = blob
    out = np.zeros_like(mask)
    if best:
        ys, xs = zip(*best)
        out[list(ys), list(xs)] = True
    return out


def hull_area(mask: np.ndarray) -> float:
    """Area of the convex hull of the pixel squares of ``mask`` (monotone chain + shoelace)."""
    ys, xs = np.nonzero(mask)
    corners = np.unique(np.concatenate([
        np.stack([xs + dx, ys + dy], axis=1) for dx in (0, 1) for dy in (0, 1)
    ]), axis=0)
    pts = sorted(map(tuple, corners.tolist()))
    if len(pts) < 3:
        return float(len(pts))

    def cross(o, a, b):
        return (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0])

    lower, upper = [], []
    for p in pts:
        while len(lower) >= 2 and cross(lower[-2], lower[-1], p) <= 0:
            lower.pop()
        lower.append(p)
    for p in reversed(pts):
        while len(upper) >= 2 and cross(upper[-2], upper[-1], p) <= 0:
            upper.pop()
        upper.append(p)
    hull = np.array(lower[:-1] + upper[:-1], dtype=np.float64)
    x, y = hull[:, 0], hull[:, 1]
    return float(0.5 * abs(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1))))


def outline_harmonics(blob: np.ndarray) -> dict[int, float]:
    """Amplitude of the 3rd, 4th and 5th harmonic of the blob's radius around its centroid, relative to the
    mean radius: per angle bin the farthest boundary pixel; empty bins are interpolated."""
    ys, xs = np.nonzero(blob)
    cy, cx = ys.mean(), xs.mean()
    padded = np.pad(blob, 1)
    interior = padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
    by, bx = np.nonzero(blob & ~interior)
    radius = np.hypot(by - cy, bx - cx) + 0.5  # to the pixel's outer edge, not its centre
    bins = ((np.arctan2(by - cy, bx - cx) + np.pi) / (2 * np.pi) * ANGLE_BINS).astype(int) % ANGLE_BINS
    profile = np.full(ANGLE_BINS, np.nan)
    np.fmax.at(profile, bins, radius)
    filled = ~np.isnan(profile)
    at = np.arange(ANGLE_BINS)
    profile = np.interp(at, at[filled], profile[filled], period=ANGLE_BINS)
    spectrum = np.abs(np.fft.rfft(profile - profile.mean())) * 2 / ANGLE_BINS / profile.mean()
    return {k: float(spectrum[k]) for k in FOLD_SHAPES}


def classify_shape(solidity: float, harmonics: dict[int, float]) -> str:
    """Shape from solidity and the outline's harmonics (see the module docstring for why)."""
    if solidity < STAR_SOLIDITY:
        return "star"
    fold = max(harmonics, key=harmonics.get)
    return FOLD_SHAPES[fold] if harmonics[fold] >= FOLD_MIN else "circle"


def hue_name(deg: float) -> str:
    for lo, hi, name in HUE_NAMES:
        if lo <= deg < hi:
            return name
    return "red"


def rgb_to_hsv(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Hue in degrees, saturation and value in 0..1, of an Nx3 array in 0..255."""
    c = rgb / 255.0
    mx, mn = c.max(axis=1), c.min(axis=1)
    d = mx - mn
    safe = np.where(d == 0, 1.0, d)
    r, g, b = c[:, 0], c[:, 1], c[:, 2]
    h = np.where(mx == r, ((g - b) / safe) % 6, np.where(mx == g, (b - r) / safe + 2, (r - g) / safe + 4)) * 60.0
    s = np.where(mx == 0, 0.0, d / np.where(mx == 0, 1.0, mx))
    return np.where(d == 0, 0.0, h), s, mx


def read_colour(pixels: np.ndarray) -> tuple[str | None, float, float]:
    """(name, mean hue, white fraction) of the foreground pixels."""
    h, s, v = rgb_to_hsv(pixels)
    white = float(np.mean((s < 0.25) & (v > 0.75))) if len(pixels) else 0.0
    coloured = (s > 0.35) & (v > 0.25)
    if coloured.sum() < 10:
        return None, float("nan"), white
    a = np.deg2rad(h[coloured])
    mean = float(np.rad2deg(np.arctan2(np.sin(a).mean(), np.cos(a).mean())) % 360)
    return hue_name(mean), mean, white


def position_name(cx: float, cy: float, size: int) -> str:
    dx, dy = cx - (size - 1) / 2, cy - (size - 1) / 2
    if abs(dx) < CENTRE_BOX * size / 64 and abs(dy) < CENTRE_BOX * size / 64:
        return "center"
    return ("top" if dy < 0 else "bottom") + " " + ("left" if dx < 0 else "right")


def read_image(image) -> Reading:
    """Shape, colour, position and outline of the main object in ``image``."""
    rgb = to_array(image)
    blob = largest_blob(foreground(rgb))
    area = int(blob.sum())
    if area < MIN_AREA:
        return Reading(None, None, None, None, {"area": area})
    ys, xs = np.nonzero(blob)
    extent = area / float((ys.max() - ys.min() + 1) * (xs.max() - xs.min() + 1))
    solidity = area / max(hull_area(blob), 1.0)
    harmonics = outline_harmonics(blob)
    colour, hue, white = read_colour(rgb[blob])
    features = {"area": area, "extent": round(extent, 3), "solidity": round(solidity, 3),
                **{f"h{k}": round(v, 3) for k, v in harmonics.items()}, "hue": round(hue, 1), "white": round(white, 3)}
    return Reading(
        classify_shape(solidity, harmonics), colour, position_name(xs.mean(), ys.mean(), rgb.shape[0]),
        "white" if white >= 0.1 else None, features,
    )


def rate(readings, predicate) -> float:
    """Fraction of ``readings`` for which ``predicate(reading)`` holds (0.0 for none)."""
    readings = list(readings)
    return sum(1 for r in readings if predicate(r)) / len(readings) if readings else 0.0


def is_concept(reading: Reading) -> bool:
    """The LoRA test's concept: a purple star (the white outline is reported, not required)."""
    return reading.shape == "star" and reading.colour == "purple"
