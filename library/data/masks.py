"""Loss masks for ``--masked_loss`` (kohya's ``apply_masked_loss``): where a mask comes from and how it
follows its image.

Why one module: a mask is only right if it goes through exactly the geometry its image went through
(resize to cover the bucket, crop at the same offsets, flip with it), whether the image is decoded
each step or its latents come from the cache. Both paths call ``prepare_mask`` with the image's own
resize size and crop offsets.

Sources, per subset (kohya's keys):

- ``conditioning_data_dir``: a folder with one mask image per training image, same file stem, same
  size; the red channel is the weight (white 1, black 0), as kohya reads conditioning images.
- ``alpha_mask``: the training image's own alpha channel (opaque 1, transparent 0); an image without
  alpha counts whole (all ones), as in kohya.

The loss multiplies each latent pixel's error by the mask area-resized to the latent size
(losses.per_sample_loss), so an all-zero half of a mask contributes neither loss nor gradient.
"""

from __future__ import annotations

import os
from typing import Optional, Sequence, Tuple

import numpy as np
from PIL import Image, ImageOps

from .errors import DatasetError, Issues
from .folders import IMAGE_EXTENSIONS
from .image_size import read_image_size
from .images import resize
from .records import ImageRecord

_SHOW = 5


def has_mask_source(rec: ImageRecord) -> bool:
    return bool(rec.mask_path or rec.subset.alpha_mask)


def find_mask(folder: str, image_name: str) -> Optional[str]:
    """The mask in ``folder`` with the image's stem (any image extension), or None."""
    stem = os.path.splitext(os.path.basename(image_name))[0]
    for ext in IMAGE_EXTENSIONS + tuple(e.upper() for e in IMAGE_EXTENSIONS):
        path = os.path.join(folder, stem + ext)
        if os.path.isfile(path):
            return path
    return None


def attach_masks(records: Sequence[ImageRecord], issues: Issues) -> None:
    """Set ``mask_path`` of records whose subset has a conditioning_data_dir; errors (before training)
    for a missing folder, a missing mask or a mask whose size differs from its image (kohya asserts)."""
    by_dir = {}
    for rec in records:
        folder = rec.subset.conditioning_data_dir
        if folder:
            by_dir.setdefault(folder, []).append(rec)
    for folder, recs in by_dir.items():
        if not os.path.isdir(folder):
            issues.error("mask_dir_missing", f"conditioning_data_dir {folder} does not exist; check the path "
                         "(it holds one mask image per training image, same file name)", folder)
            continue
        missing, wrong_size = [], []
        for rec in recs:
            rec.mask_path = find_mask(folder, rec.display_name)
            if rec.mask_path is None:
                missing.append(rec.display_name)
                continue
            size = read_image_size(rec.mask_path)
            if rec.size is not None and tuple(size) != tuple(rec.size):
                wrong_size.append(f"{rec.mask_path} is {size[0]}x{size[1]}, its image {rec.size[0]}x{rec.size[1]}")
        if missing:
            names = ", ".join(os.path.basename(n) for n in missing[:_SHOW])
            issues.error("mask_missing", f"conditioning_data_dir {folder} has no mask for {len(missing)} images "
                         f"({names}); add a mask with the same file stem for each, or remove the images", folder)
        if wrong_size:
            issues.error("mask_size", f"{len(wrong_size)} masks in {folder} differ in size from their images "
                         f"({'; '.join(wrong_size[:_SHOW])}); save each mask at its image's size", folder)


def check_masked_loss(records: Sequence[ImageRecord], issues: Issues) -> None:
    """--masked_loss with no mask anywhere would silently train unmasked: an error saying what to set."""
    if records and not any(has_mask_source(r) for r in records):
        issues.error("masked_loss_without_masks", "masked_loss is set but no subset has masks: set "
                     "conditioning_data_dir (a folder of mask images) or alpha_mask = true (use the images' alpha)")


def mask_fingerprint(rec: ImageRecord) -> str:
    """Changes when the mask (probably) changes; part of the latent cache key."""
    if rec.mask_path:
        st = os.stat(rec.mask_path)
        return f"file:{os.path.basename(rec.mask_path)}:{st.st_size}:{st.st_mtime_ns}"
    if rec.subset.alpha_mask:
        return f"alpha:{rec.fingerprint()}"
    return "none"


def _load_mask_image(rec: ImageRecord) -> Optional[Image.Image]:
    """The mask as an 8-bit "L" image at the image's displayed size, or None for "all ones"."""
    if rec.mask_path:
        source, name = rec.mask_path, rec.mask_path
    elif rec.subset.alpha_mask:
        source, name = rec.source(), rec.display_name
    else:
        return None
    try:
        import io

        im = Image.open(io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else source)
        im.load()
        im = ImageOps.exif_transpose(im)
        if rec.mask_path:
            return im.convert("RGB").getchannel("R")
        if im.mode == "P":
            im = im.convert("RGBA")
        if "A" not in im.getbands():
            return None
        return im.getchannel("A")
    except DatasetError:
        raise
    except Exception as e:
        raise DatasetError(f"cannot decode mask {name} ({type(e).__name__}: {e}); replace or remove the file") from None


def prepare_mask(rec: ImageRecord, resized_size: Tuple[int, int], crop_left_top: Tuple[int, int],
                 bucket_reso: Tuple[int, int], flipped: bool = False) -> np.ndarray:
    """float32 [H, W] in [0, 1] at bucket size: resized and cropped as the image was, flipped with it."""
    im = _load_mask_image(rec)
    w, h = bucket_reso
    if im is None:
        return np.ones((h, w), dtype=np.float32)
    arr = resize(np.asarray(im), resized_size, rec.subset.resize_interpolation)
    left, top = crop_left_top
    arr = arr[top: top + h, left: left + w].astype(np.float32) / 255.0
    if flipped:
        arr = arr[:, ::-1]
    return np.ascontiguousarray(arr)

