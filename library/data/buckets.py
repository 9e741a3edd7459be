"""Aspect-ratio buckets, identical to kohya sd-scripts.

Why: LoRAs trained here must see the same bucket sizes and crops as kohya for the same options, so
users can compare runs and reuse settings. Facts from kohya's ``make_bucket_resolutions`` and
``BucketManager.select_bucket`` (library/model_util.py, library/train_util.py):

- List: area = W*H of ``resolution``; add the largest square with side = floor(sqrt(area) / step) * step;
  for width = min_size, min_size+step, ... <= max_size: h = min(max_size, floor(floor(area / width) / step) * step);
  if h >= min_size add (width, h) and (h, width). Sorted, no duplicates.
- Assignment (upscaling allowed): the image size itself if it is in the list, else the bucket with the least
  |bucket aspect - image aspect| (first one on ties); resize to cover the bucket (scale by the side
  that fits, rounded with int(x + 0.5)), then crop the overflow (centre, or random with random_crop).
- ``bucket_no_upscale``: an image with area <= W*H keeps its size; a larger one is shrunk to area W*H
  keeping its aspect, rounding the side whose rounding distorts the aspect less to ``step``; the bucket
  is that size rounded down to ``step`` (so never upscaled, a few pixels cropped).
- ``enable_bucket = false``: a single bucket of exactly ``resolution``; images are resized to cover it
  and centre-cropped. (kohya instead requires images of exactly that size; we resize.)
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import numpy as np

from ..options.validate import resolution_problem
from .errors import DatasetError

Size = Tuple[int, int]


def make_bucket_resolutions(max_reso: Size, min_size: int = 256, max_size: int = 1024, divisible: int = 64) -> List[Size]:
    """kohya's bucket list for ``max_reso`` = (width, height)."""
    area = max_reso[0] * max_reso[1]
    resos = set()
    side = int(math.sqrt(area) // divisible) * divisible
    resos.add((side, side))
    width = min_size
    while width <= max_size:
        height = min(max_size, int((area // width) // divisible) * divisible)
        if height >= min_size:
            resos.add((width, height))
            resos.add((height, width))
        width += divisible
    return sorted(resos)


def round_to_steps(x: float, steps: int) -> int:
    x = int(x + 0.5)
    return x - x % steps


@dataclass(frozen=True)
class BucketAssignment:
    """Where one image goes: its bucket, the size it is resized to before cropping, the aspect error."""

    reso: Size
    resized_size: Size
    ar_error: float


class BucketSelector:
    """Chooses a bucket for an image size, for one dataset's bucket options."""

    def __init__(
        self,
        resolution: Size,
        enable_bucket: bool = True,
        min_bucket_reso: int = 256,
        max_bucket_reso: int = 1024,
        bucket_reso_steps: int = 64,
        bucket_no_upscale: bool = False,
    ):
        self.resolution = tuple(resolution)
        self.max_area = resolution[0] * resolution[1]
        self.steps = bucket_reso_steps
        self.no_upscale = bool(enable_bucket and bucket_no_upscale)
        if not enable_bucket:
            self.predefined = [self.resolution]
        elif self.no_upscale:
            self.predefined = []
        else:
            self.predefined = make_bucket_resolutions(self.resolution, min_bucket_reso, max_bucket_reso, bucket_reso_steps)
        self._predefined_set = set(self.predefined)
        self._aspects = np.array([w / h for w, h in self.predefined], dtype=np.float64)
        self._memo = {}  # (w, h) -> assignment: datasets repeat sizes a lot

    def select(self, width: int, height: int) -> BucketAssignment:
        """Bucket for an image of ``width`` x ``height``; DatasetError when it is smaller than one step."""
        found = self._memo.get((width, height))
        if found is None:
            found = self._memo[(width, height)] = self._select(width, height)
        return found

    def _select(self, width: int, height: int) -> BucketAssignment:
        aspect = width / height
        if not self.no_upscale:
            reso = (width, height)
            if reso not in self._predefined_set:
                reso = self.predefined[int(np.abs(self._aspects - aspect).argmin())]
            if aspect > reso[0] / reso[1]:
                scale = reso[1] / height
            else:
                scale = reso[0] / width
            resized = (int(width * scale + 0.5), int(height * scale + 0.5))
        else:
            resized = self._shrunk_size(width, height, aspect)
            reso = (resized[0] - resized[0] % self.steps, resized[1] - resized[1] % self.steps)
            if reso[0] <= 0 or reso[1] <= 0:
                raise DatasetError(
                    f"image is {width}x{height}, smaller than bucket_reso_steps={self.steps}; remove it or lower bucket_reso_steps"
                )
        return BucketAssignment(reso, resized, reso[0] / reso[1] - aspect)

    def _shrunk_size(self, width: int, height: int, aspect: float) -> Size:
        if width * height <= self.max_area:
            return (width, height)
        rw = math.sqrt(self.max_area * aspect)
        rh = self.max_area / rw
        bw = round_to_steps(rw, self.steps)
        bh_w = round_to_steps(bw / aspect, self.steps)
        bh = round_to_steps(rh, self.steps)
        bw_h = round_to_steps(bh * aspect, self.steps)
        ar_w = bw / bh_w if bh_w else math.inf
        ar_h = bw_h / bh if bh else math.inf
        if abs(ar_w - aspect) < abs(ar_h - aspect):
            return (bw, int(bw / aspect + 0.5))
        return (int(bh * aspect + 0.5), bh)


def validate_bucket_options(resolution: Optional[Size], enable_bucket: bool, min_reso: int, max_reso: int, steps: int, where: str) -> None:
    """The options layer's resolution and bucket rules (the command line's), as DatasetErrors naming the dataset."""
    if resolution is None:
        raise DatasetError(f"{where}: resolution is not set; pass --resolution 512 (SD1.x), 768 (SD2.x) or 1024 (SDXL)")
    problem = resolution_problem(resolution, enable_bucket, min_reso, max_reso, steps)
    if problem:
        raise DatasetError(f"{where}: {problem}")


def crop_offsets(resized_size: Size, bucket_reso: Size, random_crop: bool = False, rng: Optional[random.Random] = None) -> Size:
    """(left, top) of the bucket-sized window in the resized image: centred, or random."""
    offsets = []
    for have, want in zip(resized_size, bucket_reso):
        extra = max(have - want, 0)
        offsets.append((rng or random).randint(0, extra) if random_crop and extra else extra // 2)
    return offsets[0], offsets[1]


def cover_size(width: int, height: int, bucket_reso: Size) -> Size:
    """Size that covers ``bucket_reso`` keeping the aspect (same rounding as the assignment)."""
    if width / height > bucket_reso[0] / bucket_reso[1]:
        scale = bucket_reso[1] / height
    else:
        scale = bucket_reso[0] / width
    return max(int(width * scale + 0.5), bucket_reso[0]), max(int(height * scale + 0.5), bucket_reso[1])


def size_conditioning(original_size: Size, resized_size: Size, bucket_reso: Size, crop_left_top: Size, flipped: bool):
    """SDXL micro-conditioning as ((orig h, w), (crop top, left), (target h, w)).

    The crop is the real top-left of the training window in the resized image, as in SDXL's own
    training and diffusers' SDXL script; a horizontal flip mirrors the left offset. (kohya reports a
    centred "fit inside" offset instead; see docs/datasets.md.)
    """
    left, top = crop_left_top
    if flipped:
        left = resized_size[0] - left - bucket_reso[0]
    return (original_size[1], original_size[0]), (top, left), (bucket_reso[1], bucket_reso[0])


def bucket_table(assignments: Sequence[Tuple[Size, int]]) -> List[Tuple[Size, int]]:
    """[(bucket, count)] sorted by bucket, from (bucket, repeats) pairs."""
    counts = {}
    for reso, n in assignments:
        counts[reso] = counts.get(reso, 0) + n
    return sorted(counts.items())
