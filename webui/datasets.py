"""The Dataset page's work: the preflight report of a folder and the caption editor.

Why here: the report is library/data/preflight's (the one tools/check_dataset.py prints); the GUI only
turns form values into its options. Captions are written atomically next to their image.
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
import shutil
from pathlib import Path

from library.data.preflight import run_preflight
from library.options import namespace_from
from library.train.setup_data import data_options

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp")


def preflight(values: dict, processes: int = 1) -> dict:
    """The preflight report (as a dict and as text) and a step plan for the given option values."""
    args = namespace_from(values, source="the form", check=False)
    report = run_preflight(
        data_options(args), max_train_epochs=args.max_train_epochs, max_train_steps=args.max_train_steps,
        gradient_accumulation_steps=args.gradient_accumulation_steps, num_processes=processes,
    )
    out = report.to_dict()
    out["text"] = report.to_text()
    out["plan"] = plan(args, report)
    return out


def plan(args, report) -> dict:
    """Steps, epochs, saves and sample rounds the run will make (the numbers shown before starting)."""
    total, epochs = report.total_steps, report.epochs
    saves = (total // args.save_every_n_steps if args.save_every_n_steps else 0) + \
        (max(epochs - 1, 0) // args.save_every_n_epochs if args.save_every_n_epochs else 0)
    samples = (total // args.sample_every_n_steps if args.sample_every_n_steps else 0) + \
        (max(epochs - 1, 0) // args.sample_every_n_epochs if args.sample_every_n_epochs else 0)
    return {"images": report.num_train_images, "reg_images": report.num_reg_images,
            "samples_per_epoch": report.samples_per_epoch, "batch_size": args.train_batch_size,
            "batches_per_epoch": report.batches_per_epoch, "steps_per_epoch": report.steps_per_epoch,
            "epochs": epochs, "total_steps": total, "saves": saves + 1, "sample_rounds": samples}


@functools.lru_cache(maxsize=1)
def _tokenizer():
    from library.models.tokenizers import clip_tokenizer

    return clip_tokenizer()


def token_count(text: str) -> int:
    """CLIP tokens of a caption (without start/end), as the text encoder sees it: > 75 gets cut
    unless --max_token_length allows more."""
    return len(_tokenizer()(text, truncation=False)["input_ids"]) - 2


def captions(folder: Path, extension: str = ".txt") -> list[dict]:
    """Every image under ``folder`` (recursively): caption text (None when none), CLIP token count, and a
    content hash (sha1) so the page can show duplicate images."""
    out = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if os.path.splitext(name)[1].lower() not in IMAGE_EXTENSIONS:
                continue
            image = Path(dirpath) / name
            cap = image.with_suffix(extension)
            text = cap.read_text(encoding="utf-8", errors="replace") if cap.is_file() else None
            digest = hashlib.sha1(image.read_bytes()).hexdigest()
            out.append({"image": image, "caption": text, "tokens": token_count(text) if text else 0, "sha1": digest})
    return out


def write_caption(image: Path, text: str, extension: str = ".txt") -> Path:
    """Write the caption next to ``image`` through the one atomic writer (library.atomic)."""
    from library import atomic

    path = image.with_suffix(extension)
    atomic.write_text(str(path), text)
    return path


def make_kohya_folder(source: Path, dest: Path, repeats: int, trigger: str, class_name: str = "", extension: str = ".txt") -> Path:
    """Copy the images of a flat ``source`` folder (and their captions) into ``dest/NN_trigger class/``."""
    from library.errors import UserError

    if repeats < 1:
        raise UserError(f"repeats must be at least 1, got {repeats}")
    name = f"{repeats}_{trigger.strip()}" + (f" {class_name.strip()}" if class_name.strip() else "")
    if not trigger.strip() or re.search(r"[\\/:*?\"<>|]", name):
        raise UserError(f"folder name {name!r}: give a trigger word without / \\ : * ? \" < > |")
    images = [p for p in sorted(source.iterdir()) if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file()]
    if not images:
        raise UserError(f"{source}: no images ({', '.join(IMAGE_EXTENSIONS)}) in this folder")
    target = dest / name
    if target.exists():
        raise UserError(f"{target} exists already; pick another destination or name")
    target.mkdir(parents=True)
    for image in images:
        shutil.copy2(image, target / image.name)
        caption = image.with_suffix(extension)
        if caption.is_file():
            shutil.copy2(caption, target / caption.name)
    return target
