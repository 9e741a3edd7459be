"""Training pixels are kohya's, pixel for pixel: PIL decode, OpenCV INTER_AREA to shrink, PIL Lanczos to
enlarge, and each ``resize_interpolation`` from the library kohya takes it from (library/utils.py).

Checked through the data layer's entry points (``prepare_datasets`` + the torch ``TrainDataset``), on a
textured JPEG where PIL's BOX filter, which lorasmith used before, differs visibly from INTER_AREA.
"""

import cv2
import numpy as np
import pytest
from PIL import Image

from library.data.dataset import TrainDataset
from library.data.params import DataOptions
from library.data.prepare import prepare_datasets


def _photo(path, size):
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w]
    rng = np.random.default_rng(1)
    base = np.stack([xx * 255 // w, yy * 255 // h, (xx + yy) * 255 // (w + h)], -1).astype(np.int16)
    texture = (np.sin(xx / 3.0) * 40 + np.cos(yy / 5.0) * 40).astype(np.int16)[..., None]
    arr = np.clip(base + texture + rng.integers(-20, 21, base.shape), 0, 255).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path, quality=90)


def _trained_pixels(tmp_path, size, **opts):
    """(uint8 [H, W, 3] the dataset trains on, the decoded file, the resized size, the bucket)."""
    _photo(tmp_path / "img" / "1_a" / "p.jpg", size)
    (ds,) = prepare_datasets(DataOptions(train_data_dir=str(tmp_path / "img"), resolution=128, enable_bucket=True,
                                         min_bucket_reso=64, max_bucket_reso=256, bucket_reso_steps=32, **opts))
    rec = ds.records[0]
    images = TrainDataset([ds], seed=0)[(1, 0)]["images"][0]  # [3, H, W] in [-1, 1]
    pixels = np.rint((images.permute(1, 2, 0).numpy() + 1.0) * 127.5).astype(np.int16)
    decoded = np.array(Image.open(tmp_path / "img" / "1_a" / "p.jpg").convert("RGB"))
    return pixels, decoded, rec.resized_size, rec.bucket_reso


def _centre(arr, bucket):
    h, w = arr.shape[:2]
    left, top = (w - bucket[0]) // 2, (h - bucket[1]) // 2
    return arr[top: top + bucket[1], left: left + bucket[0]].astype(np.int16)


def test_a_downscale_equals_opencv_inter_area(tmp_path):
    pixels, decoded, resized, bucket = _trained_pixels(tmp_path, (500, 375))
    assert resized[0] < 500 and resized[1] < 375
    expected = _centre(cv2.resize(decoded, resized, interpolation=cv2.INTER_AREA), bucket)
    np.testing.assert_array_equal(pixels, expected)
    box = _centre(np.array(Image.fromarray(decoded).resize(resized, Image.Resampling.BOX)), bucket)
    assert np.abs(box - expected).max() > 2  # the filter used before: this test tells the two apart


def test_an_upscale_equals_pil_lanczos(tmp_path):
    pixels, decoded, resized, bucket = _trained_pixels(tmp_path, (90, 60))
    assert resized[0] > 90
    expected = _centre(np.array(Image.fromarray(decoded).resize(resized, Image.Resampling.LANCZOS)), bucket)
    np.testing.assert_array_equal(pixels, expected)


@pytest.mark.parametrize("name, resize", [
    ("bicubic", lambda a, s: cv2.resize(a, s, interpolation=cv2.INTER_CUBIC)),
    ("nearest", lambda a, s: cv2.resize(a, s, interpolation=cv2.INTER_NEAREST_EXACT)),
    ("area", lambda a, s: cv2.resize(a, s, interpolation=cv2.INTER_AREA)),
    ("box", lambda a, s: np.array(Image.fromarray(a).resize(s, Image.Resampling.BOX))),
    ("lanczos", lambda a, s: np.array(Image.fromarray(a).resize(s, Image.Resampling.LANCZOS))),
])
def test_resize_interpolation_uses_kohyas_library_for_each_filter(tmp_path, name, resize):
    pixels, decoded, resized, bucket = _trained_pixels(tmp_path, (500, 375), resize_interpolation=name)
    np.testing.assert_array_equal(pixels, _centre(resize(decoded, resized), bucket))
