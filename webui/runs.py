"""Reading a run folder for the page: status, metrics (downsampled), samples, files, log tail.

Why downsampling here: a 100k-step run has 100k metric lines; the chart needs a few thousand points,
so the server averages buckets of steps and the page stays responsive.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

from library.train.run_folder import ITEM_LOSSES_FILE, METRICS_FILE, SAMPLES_FILE


def read_jsonl(path: Path, offset: int = 0) -> tuple[list[dict], int]:
    """Complete lines from byte ``offset`` on (a half-written last line waits), and the next offset."""
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            data = f.read()
    except OSError:
        return [], offset
    end = data.rfind(b"\n") + 1
    rows = []
    for line in data[:end].splitlines():
        try:
            rows.append(json.loads(line))
        except ValueError:
            continue
    return rows, offset + end


def merge_steps(rows: list[dict]) -> list[dict]:
    """One row per step: later lines win (a resumed run repeats steps), extra scalar lines merge in."""
    by_step: dict[int, dict] = {}
    for row in rows:
        step = row.get("step")
        if isinstance(step, int):
            by_step.setdefault(step, {}).update(row)
    return [by_step[s] for s in sorted(by_step)]


def downsample(rows: list[dict], max_points: int) -> list[dict]:
    """At most ``max_points`` rows: each is the mean of a bucket of consecutive steps (step = the bucket's last)."""
    if max_points <= 0 or len(rows) <= max_points:
        return rows
    size = math.ceil(len(rows) / max_points)
    out = []
    for i in range(0, len(rows), size):
        bucket = rows[i:i + size]
        merged = {"step": bucket[-1]["step"]}
        keys = {k for r in bucket for k, v in r.items() if isinstance(v, (int, float)) and k not in ("step", "epoch", "time")}
        for k in keys:
            vals = [r[k] for r in bucket if isinstance(r.get(k), (int, float)) and math.isfinite(r[k])]
            if vals:
                merged[k] = sum(vals) / len(vals)
        merged["epoch"] = bucket[-1].get("epoch")
        out.append(merged)
    return out


def metrics(folder: Path, max_points: int = 2000) -> dict:
    rows, offset = read_jsonl(folder / METRICS_FILE)
    merged = merge_steps(rows)
    return {"count": len(merged), "offset": offset, "rows": downsample(merged, max_points)}


def samples(folder: Path) -> list[dict]:
    rows, _ = read_jsonl(folder / SAMPLES_FILE)
    return [r for r in rows if (folder / r.get("file", "")).is_file()]


def files(folder: Path) -> list[dict]:
    out = []
    if not folder.is_dir():
        return out
    for entry in sorted(os.scandir(folder), key=lambda e: e.name):
        if entry.name.startswith("."):
            continue
        st = entry.stat()
        out.append({"name": entry.name, "dir": entry.is_dir(), "size": st.st_size, "mtime": st.st_mtime})
    return out


def log_tail(path: str | None, lines: int = 200) -> str:
    """The last ``lines`` lines of a job's log (progress-bar carriage returns collapsed to the last state)."""
    if not path:
        return ""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 200_000))
            text = f.read().decode("utf-8", errors="replace")
    except OSError:
        return ""
    out = [line.rsplit("\r", 1)[-1] if "\r" in line.rstrip("\r") else line for line in text.split("\n")]
    return "\n".join(out[-lines:])


def image_losses(folder: Path, top: int = 20) -> dict:
    """Per-image loss from ``item_losses.jsonl``: each image's mean over the steps it was trained in, and how many
    standard deviations it lies above the mean of all images (z). A single step's loss depends mostly on the
    random timestep, so only means over several steps say something; ``top`` images with the highest z first."""
    rows, _ = read_jsonl(folder / ITEM_LOSSES_FILE)
    sums: dict[str, list[float]] = {}
    for row in rows:
        for item in row.get("items") or []:
            key, loss = item if isinstance(item, list) and len(item) == 2 else (None, None)
            if isinstance(key, str) and isinstance(loss, (int, float)) and math.isfinite(loss):
                acc = sums.setdefault(key, [0.0, 0])
                acc[0] += loss
                acc[1] += 1
    means = {k: total / n for k, (total, n) in sums.items()}
    if not means:
        return {"images": [], "count": 0, "mean": None, "std": None}
    mean = sum(means.values()) / len(means)
    std = math.sqrt(sum((m - mean) ** 2 for m in means.values()) / len(means))
    images = [{"key": k, "mean": round(m, 6), "n": sums[k][1], "z": round((m - mean) / std, 3) if std > 0 else 0.0}
              for k, m in means.items()]
    images.sort(key=lambda i: -i["z"])
    return {"images": images[:top], "count": len(images), "mean": mean, "std": std}
