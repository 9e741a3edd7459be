"""Benchmark: decode + resize + crop of photo-sized JPEGs (512-1024 px) to 512 px buckets, PIL vs OpenCV.

kohya decodes with PIL and shrinks with OpenCV's ``cv2.INTER_AREA`` (enlarging with PIL's Lanczos);
lorasmith used PIL's BOX filter on a JPEG ``draft`` (DCT-reduced) decode. The baseline, run in the same
process on the same images, is that PIL path; each variant prints images/s, its ratio to the baseline,
and its pixel difference to kohya's preprocessing (PIL decode, ``cv2.resize(INTER_AREA)``, centre crop).
Runs alternate image by image and keep each image's best of the rounds, because the machine may be shared.

    python bench/image_resize.py [--images 48] [--rounds 3] [--resolution 512] [--cv2_threads 1]
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import cv2  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from library.data.buckets import cover_size  # noqa: E402
from library.data.images import prepare_pixels  # noqa: E402

SIZES = [(1024, 768), (768, 1024), (1024, 1024), (896, 640), (640, 896), (1000, 750), (960, 540), (600, 800), (512, 512)]


def make_jpegs(n: int) -> list:
    """(bytes, (w, h)) of textured gradients with noise: enough detail that filters differ visibly."""
    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        w, h = SIZES[i % len(SIZES)]
        yy, xx = np.mgrid[0:h, 0:w]
        base = np.stack([xx * 255 // w, yy * 255 // h, (xx + yy) * 255 // (w + h)], -1).astype(np.int16)
        texture = (np.sin(xx / 3.0 + i) * 40 + np.cos(yy / 5.0) * 40).astype(np.int16)[..., None]
        arr = np.clip(base + texture + rng.integers(-20, 21, base.shape), 0, 255).astype(np.uint8)
        buf = io.BytesIO()
        Image.fromarray(arr).save(buf, "JPEG", quality=90)
        out.append((buf.getvalue(), (w, h)))
    return out


def bucket_for(size, resolution: int):
    w, h = size
    short = resolution * 3 // 4
    return (resolution, short) if w > h else ((short, resolution) if h > w else (resolution, resolution))


def _crop(arr, bucket):
    h, w = arr.shape[:2]
    left, top = (w - bucket[0]) // 2, (h - bucket[1]) // 2
    return arr[top: top + bucket[1], left: left + bucket[0]]


def _kohya_resize_crop(arr, bucket):
    """kohya's rule on decoded RGB pixels: cv2.INTER_AREA when shrinking, PIL Lanczos when enlarging, then crop."""
    size = cover_size(arr.shape[1], arr.shape[0], bucket)
    if size != (arr.shape[1], arr.shape[0]):
        if size[0] <= arr.shape[1] and size[1] <= arr.shape[0]:
            arr = cv2.resize(arr, size, interpolation=cv2.INTER_AREA)
        else:
            arr = np.array(Image.fromarray(arr).resize(size, Image.Resampling.LANCZOS))
    return _crop(arr, bucket)


def _box_resize_crop(im, full, bucket):
    """The old PIL rule: BOX to shrink, Lanczos to enlarge (``full``: the size before any JPEG draft)."""
    im = im.convert("RGB")
    size = cover_size(full[0], full[1], bucket)
    if size != im.size:
        shrink = size[0] <= im.size[0] and size[1] <= im.size[1]
        im = im.resize(size, Image.Resampling.BOX if shrink else Image.Resampling.LANCZOS)
    return _crop(np.array(im), bucket)


def kohya_reference(blob, bucket):
    """kohya's train_util: PIL decode to RGB, then kohya's resize rule."""
    return _kohya_resize_crop(np.array(Image.open(io.BytesIO(blob)).convert("RGB")), bucket)


def pil_draft_box(blob, bucket):
    """The PIL path lorasmith had: JPEG draft when >= 2x too large, then BOX (Lanczos to enlarge)."""
    im = Image.open(io.BytesIO(blob))
    full = im.size
    if im.size[0] >= 2 * bucket[0] and im.size[1] >= 2 * bucket[1]:
        im.draft("RGB", bucket)
    return _box_resize_crop(im, full, bucket)


def pil_full_box(blob, bucket):
    im = Image.open(io.BytesIO(blob))
    return _box_resize_crop(im, im.size, bucket)


def cv2_decode_area(blob, bucket):
    """OpenCV decodes too (kohya's rule otherwise: INTER_AREA to shrink, PIL Lanczos to enlarge)."""
    arr = cv2.cvtColor(cv2.imdecode(np.frombuffer(blob, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    return _kohya_resize_crop(arr, bucket)


def ours(blob, bucket):
    return prepare_pixels(blob, bucket).array


VARIANTS = {
    "PIL draft + BOX (before; baseline)": pil_draft_box,
    "PIL full decode + BOX": pil_full_box,
    "cv2.imdecode + INTER_AREA": cv2_decode_area,
    "prepare_pixels (PIL decode + cv2 INTER_AREA)": ours,
}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=int, default=45)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--resolution", type=int, default=512)
    ap.add_argument("--cv2_threads", type=int, default=1, help="OpenCV's own threads (the data loader parallelises images)")
    args = ap.parse_args(argv)
    cv2.setNumThreads(args.cv2_threads)
    images = make_jpegs(args.images)
    jobs = [(blob, bucket_for(size, args.resolution)) for blob, size in images]
    print(f"machine: {os.cpu_count()} CPU cores (load average {os.getloadavg()[0]:.1f}); Pillow {Image.__version__}, "
          f"OpenCV {cv2.__version__} with {cv2.getNumThreads()} thread(s); {len(jobs)} JPEGs 512-1024 px -> "
          f"buckets at {args.resolution} px")
    reference = [kohya_reference(blob, bucket) for blob, bucket in jobs]
    # interleaved image by image (each variant on image i, then on image i+1 ...) and the best of the
    # rounds kept per image and variant, so that load from other jobs hits every variant alike
    best = {name: [float("inf")] * len(jobs) for name in VARIANTS}
    for _ in range(args.rounds):
        for i, (blob, bucket) in enumerate(jobs):
            for name, fn in VARIANTS.items():
                t0 = time.perf_counter()
                fn(blob, bucket)
                best[name][i] = min(best[name][i], time.perf_counter() - t0)
    best = {name: sum(times) for name, times in best.items()}
    base = best["PIL draft + BOX (before; baseline)"]
    print(f"{'variant':46s} {'images/s':>9s} {'vs base':>8s}   difference to kohya (mean |d|, max, pixels off by >1)")
    for name, fn in VARIANTS.items():
        diffs = [np.abs(fn(blob, bucket).astype(np.int16) - ref.astype(np.int16)) for (blob, bucket), ref in zip(jobs, reference)]
        mean = float(np.mean([d.mean() for d in diffs]))
        worst = int(max(d.max() for d in diffs))
        off = 100 * float(np.mean([(d > 1).mean() for d in diffs]))
        print(f"{name:46s} {len(jobs) / best[name]:9.1f} {base / best[name]:7.2f}x   {mean:.3f}, {worst}, {off:.1f} %")
    resize_only(jobs, args.rounds)
    return 0


def resize_only(jobs, rounds: int) -> None:
    """The filters alone on the already decoded images (the shrinking ones), interleaved the same way."""
    arrays = [np.array(Image.open(io.BytesIO(blob)).convert("RGB")) for blob, _ in jobs]
    work = [(a, cover_size(a.shape[1], a.shape[0], bucket)) for a, (_, bucket) in zip(arrays, jobs)]
    work = [(a, size) for a, size in work if size[0] < a.shape[1] and size[1] < a.shape[0]]
    filters = {
        "PIL BOX (before)": lambda a, size: np.asarray(Image.fromarray(a).resize(size, Image.Resampling.BOX)),
        "cv2 INTER_AREA (kohya; now)": lambda a, size: cv2.resize(a, size, interpolation=cv2.INTER_AREA),
    }
    best = {name: [float("inf")] * len(work) for name in filters}
    for _ in range(rounds):
        for i, (a, size) in enumerate(work):
            for name, fn in filters.items():
                t0 = time.perf_counter()
                fn(a, size)
                best[name][i] = min(best[name][i], time.perf_counter() - t0)
    base = sum(best["PIL BOX (before)"])
    print(f"resize only, {len(work)} shrinking images:")
    for name, times in best.items():
        print(f"  {name:44s} {len(work) / sum(times):9.1f} {base / sum(times):7.2f}x")


if __name__ == "__main__":
    sys.exit(main())
