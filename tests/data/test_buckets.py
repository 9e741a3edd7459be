"""Buckets must equal kohya's.

Where the expectations come from: kohya-ss/sd-scripts library/model_util.py ``make_bucket_resolutions``
and library/train_util.py ``BucketManager.select_bucket`` (read for behaviour, not copied). The 512
list below was worked out by hand from that algorithm (area 262144; for each width 256..1024 step 64,
h = min(1024, floor(floor(262144 / w) / 64) * 64)); the SDXL entries (832x1216, 896x1152, ...) are the
well-known kohya SDXL buckets; ``_reference_*`` re-derive the rest with a plain loop written from the
description in docs/datasets.md (kohya's make_bucket_resolutions), independent of library/data/buckets.py.
"""

import math

import pytest

from library.data.buckets import BucketSelector, crop_offsets, make_bucket_resolutions, size_conditioning
from library.data.errors import DatasetError

KOHYA_512 = [
    (256, 832), (256, 896), (256, 960), (256, 1024), (320, 704), (320, 768), (384, 640), (448, 576), (512, 512),
    (576, 448), (640, 384), (704, 320), (768, 320), (832, 256), (896, 256), (960, 256), (1024, 256),
]


def _reference_list(w, h, lo, hi, step):
    area = w * h
    out = {(math.isqrt(area) // step * step,) * 2}
    for width in range(lo, hi + 1, step):
        height = min(hi, area // width // step * step)
        if height >= lo:
            out |= {(width, height), (height, width)}
    return sorted(out)


def _reference_select(buckets, w, h):
    if (w, h) in buckets:
        reso = (w, h)
    else:
        errs = [abs(bw / bh - w / h) for bw, bh in buckets]
        reso = buckets[errs.index(min(errs))]  # first on ties, like numpy argmin
    scale = reso[1] / h if w / h > reso[0] / reso[1] else reso[0] / w
    return reso, (int(w * scale + 0.5), int(h * scale + 0.5))


def test_512_defaults_hand_computed():
    assert make_bucket_resolutions((512, 512)) == KOHYA_512


@pytest.mark.parametrize("res", [512, 768, 1024])
@pytest.mark.parametrize("step", [32, 64])
@pytest.mark.parametrize("lo, hi", [(256, 1024), (256, 2048), (512, 2048)])
def test_lists_match_reference(res, step, lo, hi):
    if res < lo or res > hi:
        pytest.skip("kohya rejects these bucket limits for this resolution")
    assert make_bucket_resolutions((res, res), lo, hi, step) == _reference_list(res, res, lo, hi, step)


def test_known_entries():
    b768 = make_bucket_resolutions((768, 768))
    assert {(640, 896), (704, 832), (768, 768), (832, 704), (256, 1024), (576, 1024)} <= set(b768)
    sdxl = make_bucket_resolutions((1024, 1024), 256, 2048, 64)
    assert {(1024, 1024), (832, 1216), (1216, 832), (896, 1152), (768, 1344), (640, 1600), (512, 2048)} <= set(sdxl)
    b512_32 = make_bucket_resolutions((512, 512), 256, 1024, 32)
    assert {(480, 544), (544, 480), (416, 608), (512, 512)} <= set(b512_32)
    assert make_bucket_resolutions((512, 768))[0] == (256, 1024)  # non-square: area 393216


ODD_SIZES = [
    (1000, 1500), (1920, 1080), (1080, 1920), (500, 700), (100, 100), (3000, 100), (100, 3000), (513, 511),
    (640, 384), (384, 640), (333, 777), (1234, 567), (4032, 3024), (3024, 4032), (800, 600), (600, 800),
    (1024, 1024), (257, 1023), (2048, 512), (720, 1280),
]


@pytest.mark.parametrize("w, h", ODD_SIZES)
def test_assignment_matches_reference(w, h):
    sel = BucketSelector((512, 512), True, 256, 1024, 64)
    a = sel.select(w, h)
    assert (a.reso, a.resized_size) == _reference_select(KOHYA_512, w, h)
    assert a.resized_size[0] >= a.reso[0] and a.resized_size[1] >= a.reso[1]


def test_assignment_hand_computed():
    sel = BucketSelector((512, 512), True, 256, 1024, 64)
    assert (sel.select(1000, 1500).reso, sel.select(1000, 1500).resized_size) == ((384, 640), (427, 640))
    assert (sel.select(1920, 1080).reso, sel.select(1920, 1080).resized_size) == ((640, 384), (683, 384))
    assert (sel.select(500, 700).reso, sel.select(500, 700).resized_size) == ((448, 576), (448, 627))
    assert sel.select(100, 100).resized_size == (512, 512)  # upscaled
    assert (sel.select(3000, 100).reso, sel.select(3000, 100).resized_size) == ((1024, 256), (7680, 256))
    assert sel.select(384, 640).resized_size == (384, 640)  # exact bucket size wins


@pytest.mark.parametrize(
    "w, h, reso, resized",
    [
        (300, 200, (256, 192), (300, 200)),  # small: kept, bucket rounded down, never upscaled
        (600, 400, (576, 384), (600, 400)),
        (512, 512, (512, 512), (512, 512)),
        (2000, 1000, (640, 320), (640, 320)),  # shrunk to area 512*512, hand-computed from kohya's rounding
        (1000, 1000, (512, 512), (512, 512)),
        (100, 3000, (64, 1920), (64, 1920)),  # kohya rounds the narrow side first: far below the area
    ],
)
def test_no_upscale(w, h, reso, resized):
    a = BucketSelector((512, 512), True, 256, 1024, 64, bucket_no_upscale=True).select(w, h)
    assert (a.reso, a.resized_size) == (reso, resized)


def test_no_upscale_too_small_image():
    with pytest.raises(DatasetError, match="smaller than bucket_reso_steps=64"):
        BucketSelector((512, 512), True, 256, 1024, 64, bucket_no_upscale=True).select(40, 300)


def test_no_bucket_single_size_cover_and_crop():
    sel = BucketSelector((512, 512), enable_bucket=False)
    assert sel.predefined == [(512, 512)]
    a = sel.select(1000, 1500)
    assert (a.reso, a.resized_size) == ((512, 512), (512, 768))
    assert crop_offsets(a.resized_size, a.reso) == (0, 128)


def test_crop_offsets_random_within_bounds():
    import random

    rng = random.Random(0)
    seen = {crop_offsets((700, 512), (512, 512), True, rng) for _ in range(200)}
    assert all(0 <= left <= 188 and top == 0 for left, top in seen) and len(seen) > 20


def test_sdxl_size_conditioning_with_flip():
    orig, crop, target = size_conditioning((1000, 1500), (427, 640), (384, 640), (21, 0), flipped=False)
    assert (orig, crop, target) == ((1500, 1000), (0, 21), (640, 384))
    _, crop_f, _ = size_conditioning((1000, 1500), (427, 640), (384, 640), (21, 0), flipped=True)
    assert crop_f == (0, 427 - 21 - 384)
