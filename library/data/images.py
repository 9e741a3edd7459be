"""Decoding, resizing, cropping and colour augmentation of one training image.

Why: the torch Dataset and the latent cache must turn an image into exactly the same bucket-sized
pixels, so both call ``prepare_pixels``. Resizing is kohya's (library/utils.py ``resize_image``), pixel
for pixel: OpenCV's ``INTER_AREA`` when shrinking (the default; PIL's BOX differs from it by up to 27
levels on textured photos) and PIL's Lanczos when enlarging; ``resize_interpolation`` picks another
filter from the same library kohya uses for it. The full image is decoded (no JPEG ``draft``, which
changes pixels); docs/benchmarks.md has the speed of both paths. Transparent images are flattened the
way ``PIL.Image.convert("RGB")`` does (as kohya). EXIF rotation is applied (kohya does not). Every PIL
mode becomes 8-bit RGB by its real range (``to_rgb``): a 16-bit grey PNG is scaled from 0-65535, not
clipped at 255 (which PIL's ``convert`` does, training it as a white image).
"""

from __future__ import annotations

import importlib.util
import io
import random
from dataclasses import dataclass
from typing import Optional, Tuple

import numpy as np
from PIL import Image, ImageOps

from ..vocabulary import INTERPOLATIONS
from .buckets import cover_size, crop_offsets
from .errors import DatasetError

# kohya's split (library/utils.py): PIL for lanczos and box, OpenCV for the rest. cv2 constants by name,
# so that importing this module (the torch-free preflight does) does not load OpenCV.
_PIL_FILTERS = {"lanczos": Image.Resampling.LANCZOS, "box": Image.Resampling.BOX}
_CV2_FILTERS = {"area": "INTER_AREA", "bilinear": "INTER_LINEAR", "linear": "INTER_LINEAR", "bicubic": "INTER_CUBIC",
                "cubic": "INTER_CUBIC", "nearest": "INTER_NEAREST_EXACT"}
# every name of library.vocabulary -> (library, filter); a name without a filter fails at import
_FILTERS = {name: ("PIL", _PIL_FILTERS[name]) if name in _PIL_FILTERS else ("cv2", _CV2_FILTERS[name])
            for name in INTERPOLATIONS}


OPENCV_MISSING = ("OpenCV (the cv2 module) is not installed in this Python, and lorasmith resizes images with it as "
                  "kohya does; install one OpenCV flavour: pip install opencv-python-headless (inside ComfyUI: run "
                  "custom_nodes/lorasmith_trainer/install.py with ComfyUI's Python)")


def check_opencv() -> None:
    """UserError unless some OpenCV flavour provides ``cv2``; looked up without importing it (the preflight
    stays light), so a missing OpenCV stops a run before the scan, not at the first resize after the load."""
    if importlib.util.find_spec("cv2") is None:
        raise DatasetError(OPENCV_MISSING)


def _cv2():
    try:
        import cv2
    except ImportError as e:
        raise DatasetError(f"{OPENCV_MISSING} ({e})") from None
    return cv2


@dataclass
class Pixels:
    """A bucket-sized RGB uint8 array [H, W, 3] and where it came from."""

    array: np.ndarray
    original_size: Tuple[int, int]  # (w, h) of the decoded image
    resized_size: Tuple[int, int]  # (w, h) before cropping
    crop_left_top: Tuple[int, int]


def load_image(source, name: str = "", target: Optional[Tuple[int, int]] = None) -> Image.Image:
    """Decode a path or bytes to RGB (EXIF rotation applied); DatasetError naming the file if broken.

    ``target`` (w, h) lets JPEG decoding skip detail that resizing to about that size would discard
    (for checks that only need the file to decode; training pixels decode in full, as kohya's).
    """
    return _decode(source, name, target)[0]


def _decode(source, name: str, target: Optional[Tuple[int, int]]):
    """(RGB image, its full displayed size before any JPEG draft reduction)."""
    name = name or (source if isinstance(source, str) else "<in-memory image>")
    try:
        im = Image.open(io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else source)
        rotated = im.getexif().get(0x0112, 1) in (5, 6, 7, 8)
        full = (im.size[1], im.size[0]) if rotated else im.size
        if target is not None and im.format == "JPEG":
            w, h = (target[1], target[0]) if rotated else target
            if im.size[0] >= 2 * w and im.size[1] >= 2 * h:
                im.draft("RGB", (w, h))
        im.load()
        im = ImageOps.exif_transpose(im)
        return to_rgb(im), full
    except DatasetError:
        raise
    except Exception as e:  # PIL raises many types for damaged files
        raise DatasetError(f"cannot decode image {name} ({type(e).__name__}: {e}); replace or remove the file") from None


_SIXTEEN_BIT = ("I;16", "I;16L", "I;16B", "I;16N", "I")


def to_rgb(im: Image.Image) -> Image.Image:
    """8-bit RGB of any PIL mode, scaled by the mode's range (16-bit and float greys included).

    I;16* and I (how PIL opens 16-bit grey PNGs) are 0-65535; F is 0-1 when nothing exceeds 1, else
    0-255. P and LA go through RGBA; alpha is dropped as ``convert("RGB")`` does (as kohya).
    """
    if im.mode in _SIXTEEN_BIT:
        grey = np.asarray(im, dtype=np.float64) / 257.0
        return Image.fromarray(np.clip(np.rint(grey), 0, 255).astype(np.uint8), "L").convert("RGB")
    if im.mode == "F":
        grey = np.nan_to_num(np.asarray(im, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0)
        scale = 255.0 if grey.size and grey.max() <= 1.0 else 1.0
        return Image.fromarray(np.clip(np.rint(grey * scale), 0, 255).astype(np.uint8), "L").convert("RGB")
    if im.mode in ("P", "PA", "LA"):
        im = im.convert("RGBA")
    return im if im.mode == "RGB" else im.convert("RGB")


def resize_filter(size_now: Tuple[int, int], size: Tuple[int, int], interpolation: Optional[str] = None) -> str:
    """The filter name used: ``interpolation``, else kohya's default (area to shrink, lanczos to enlarge)."""
    if interpolation is not None:
        return interpolation
    return "area" if size[0] <= size_now[0] and size[1] <= size_now[1] else "lanczos"


def resize_key(interpolation: Optional[str]) -> str:
    """What latent caches key on, so that entries made with another filter or resizer are rebuilt
    (the PIL BOX resizer before OpenCV's INTER_AREA made slightly different pixels)."""
    return f"{interpolation or 'area|lanczos'}@kohya-cv2"


def resize(arr: np.ndarray, size: Tuple[int, int], interpolation: Optional[str] = None) -> np.ndarray:
    """``arr`` [H, W(, C)] uint8 resized to ``size`` (w, h) as kohya resizes it."""
    size = (int(size[0]), int(size[1]))
    if (arr.shape[1], arr.shape[0]) == size:
        return arr
    library, filt = _FILTERS[resize_filter((arr.shape[1], arr.shape[0]), size, interpolation)]
    if library == "PIL":
        return np.asarray(Image.fromarray(arr).resize(size, resample=filt))
    cv2 = _cv2()
    return cv2.resize(np.ascontiguousarray(arr), size, interpolation=getattr(cv2, filt))


def prepare_pixels(
    source,
    bucket_reso: Tuple[int, int],
    *,
    name: str = "",
    random_crop: bool = False,
    rng: Optional[random.Random] = None,
    interpolation: Optional[str] = None,
) -> Pixels:
    """Decode, resize to cover the bucket (kohya's rounding), crop to it (centre or random)."""
    im, original = _decode(source, name, None)
    resized = cover_size(original[0], original[1], bucket_reso)
    arr = resize(np.asarray(im), resized, interpolation)
    left, top = crop_offsets(resized, bucket_reso, random_crop, rng)
    arr = arr[top : top + bucket_reso[1], left : left + bucket_reso[0]]
    arr = np.ascontiguousarray(arr)
    return Pixels(arr if arr.flags.writeable else arr.copy(), original, resized, (left, top))


def color_aug(arr: np.ndarray, rng: random.Random) -> np.ndarray:
    """kohya's colour augmentation: with p=0.33, a hue shift of up to +-8/180 or a gamma in [0.95, 1.05]."""
    if rng.random() > 0.33:
        return arr
    if rng.random() > 0.5:
        hsv = np.array(Image.fromarray(arr).convert("HSV"))
        shift = rng.uniform(-8, 8) * 256 / 180
        hsv[..., 0] = ((hsv[..., 0].astype(np.float32) + shift) % 256).astype(np.uint8)
        return np.array(Image.fromarray(hsv, "HSV").convert("RGB"))
    gamma = rng.uniform(0.95, 1.05)
    return np.clip(arr.astype(np.float32) ** gamma, 0, 255).astype(np.uint8)


def to_tensor(arr: np.ndarray):
    """[H, W, 3] uint8 -> torch float32 [3, H, W] in [-1, 1] (torch imported here: the preflight needs none)."""
    import torch

    t = torch.from_numpy(np.ascontiguousarray(arr)).permute(2, 0, 1).float()
    return t / 127.5 - 1.0
