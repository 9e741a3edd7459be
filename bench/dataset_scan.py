"""Benchmark: scanning a 100,000-image kohya dataset (folders, captions, image headers, buckets).

Generates N tiny PNGs (several sizes/aspects) plus N ``.txt`` captions in 10 ``NN_name`` folders under
a temporary directory, then times ``prepare_datasets`` (what training and the preflight run before
anything else) and, as a baseline in the same process, reading every size with
``PIL.Image.open(path).size``. Files are in the page cache (just written): a cold disk is slower.

    python bench/dataset_scan.py [--n 100000] [--dir /tmp/somewhere] [--keep]
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from PIL import Image  # noqa: E402

from library.data.errors import Issues  # noqa: E402
from library.data.params import DataOptions  # noqa: E402
from library.data.prepare import prepare_datasets  # noqa: E402

SIZES = [(8, 8), (12, 8), (8, 12), (16, 9), (9, 16), (10, 8), (8, 10), (20, 8)]
FOLDERS = 10


def generate(root: str, n: int) -> float:
    t0 = time.perf_counter()
    blobs = []
    for i, size in enumerate(SIZES):
        buf = io.BytesIO()
        Image.new("RGB", size, (i * 30, 100, 200)).save(buf, format="PNG")
        blobs.append(buf.getvalue())
    per = n // FOLDERS
    for f in range(FOLDERS):
        folder = os.path.join(root, f"{f + 1}_subject{f}")
        os.makedirs(folder)
        for i in range(per):
            stem = os.path.join(folder, f"{i:06d}")
            with open(stem + ".png", "wb") as fh:
                fh.write(blobs[i % len(blobs)])
            with open(stem + ".txt", "w", encoding="utf-8") as fh:
                fh.write(f"subject{f}, tag {i % 97}, another tag, photo\n")
    return time.perf_counter() - t0


def pil_baseline(root: str) -> float:
    t0 = time.perf_counter()
    sizes = []
    for dirpath, _, files in os.walk(root):
        for name in files:
            if name.endswith(".png"):
                with Image.open(os.path.join(dirpath, name)) as im:
                    sizes.append(im.size)
    return time.perf_counter() - t0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--dir", default=None)
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args(argv)
    root = args.dir or tempfile.mkdtemp(prefix="lorasmith-scan-")
    img = os.path.join(root, "img")
    try:
        if not os.path.isdir(img):
            print(f"generating {args.n} images + {args.n} captions in {img} ...", flush=True)
            print(f"  generated in {generate(img, args.n):.1f} s")
        opts = DataOptions(train_data_dir=img, resolution=512, enable_bucket=True, caption_extension=".txt", train_batch_size=4)
        scans, cpus = [], []
        for _ in range(args.repeat):
            t0, c0 = time.perf_counter(), time.process_time()
            (ds,) = prepare_datasets(opts, Issues(log=False))
            scans.append(time.perf_counter() - t0)
            cpus.append(time.process_time() - c0)
        scan = statistics.median(scans)
        t0 = time.perf_counter()
        cli = subprocess.run(
            [sys.executable, str(Path(__file__).resolve().parent.parent / "tools" / "check_dataset.py"), "--train_data_dir", img,
             "--resolution", "512", "--enable_bucket", "--caption_extension", ".txt", "--max_train_epochs", "10"],
            capture_output=True, text=True,
        )
        cli_s = time.perf_counter() - t0
        base = pil_baseline(img)

        n = len(ds.records)
        print(f"machine: {os.cpu_count()} CPU cores; files in the page cache; median of {args.repeat} runs")
        print(f"images: {n}, samples/epoch: {ds.samples_per_epoch}, buckets: {len(ds.buckets)}, batches/epoch: {ds.batches_per_epoch}")
        print(f"prepare_datasets (scan + captions + headers + buckets): {scan:.2f} s wall, {statistics.median(cpus):.2f} s CPU  ({n / scan:,.0f} images/s)")
        print(f"tools/check_dataset.py end to end (with imports):      {cli_s:.2f} s  exit code {cli.returncode}")
        print(f"baseline, PIL Image.open(...).size on the same files:   {base:.2f} s (sizes only, no captions)")
        print(f"ratio: full scan / PIL-sizes-only = {scan / base:.2f}; target < 10 s: {'met' if scan < 10 else 'MISSED'}")
    finally:
        if not args.keep and not args.dir:
            shutil.rmtree(root, ignore_errors=True)
        elif args.keep:
            print(f"kept {root}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
