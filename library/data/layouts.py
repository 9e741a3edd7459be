"""Layouts other than kohya's folders, and detecting which layout a folder uses.

Why: users arrive with data shaped for other trainers; each shape is read here into ``ImageRecord``s.
- ``metadata_jsonl``: ``metadata.jsonl`` lines ``{"file_name": "01.jpg", "text": "..."}`` (diffusers /
  Hugging Face imagefolder); the caption key is ``caption_column`` (default "text"); paths are relative
  to the jsonl's folder.
- ``image_text_pairs``: ``image/0.png`` + ``text/0.txt`` matched by file stem.
- ``kohya_json``: kohya fine-tuning metadata (``in_json`` / ``metadata_file``):
  ``{"<image key>": {"caption": ..., "tags": ...}}``, images found in ``image_dir``.
- ``hf_dataset``: a ``datasets`` dataset (see hf_datasets.py).
- ``images``: a plain folder of images with caption files (folders.scan_image_folder).
"""

from __future__ import annotations

import difflib
import hashlib
import json
import os
from typing import List

from .captions import caption_lines, check_caption_text, read_caption_file
from .errors import DatasetError, Issues
from .files import is_regular_file
from .folders import IMAGE_EXTENSIONS, count_images, is_image_name, parse_folder_name, scan_image_folder
from .params import SubsetParams
from .records import ImageRecord

METADATA_JSONL = "metadata.jsonl"
HF_MARKERS = ("dataset_info.json", "state.json", "dataset_dict.json")


def detect_layout(folder: str) -> str:
    """Best guess of a folder's layout: one of params.DATA_LAYOUTS except "auto", or "empty"."""
    if not os.path.isdir(folder):
        return "missing"
    names = set(os.listdir(folder))
    if METADATA_JSONL in names:
        return "metadata_jsonl"
    if os.path.isdir(os.path.join(folder, "image")) and os.path.isdir(os.path.join(folder, "text")):
        return "image_text_pairs"
    if names & set(HF_MARKERS) or any(n.endswith((".arrow", ".parquet")) for n in names):
        return "hf_dataset"
    data_dir = os.path.join(folder, "data")
    if os.path.isdir(data_dir) and any(n.endswith(".parquet") for n in os.listdir(data_dir)):
        return "hf_dataset"
    subdirs = [n for n in names if os.path.isdir(os.path.join(folder, n)) and not n.startswith(".")]
    if any(parse_folder_name(n) is not None for n in subdirs):
        return "kohya"
    if any(is_image_name(n) for n in names):
        return "images"
    if any(count_images(os.path.join(folder, n)) for n in subdirs):
        return "kohya"  # subfolders with images but no repeat numbers: folders.py explains what to rename
    return "empty"


def subset_layout(subset: SubsetParams) -> str:
    """The layout a subset will be read with (its ``layout`` unless "auto")."""
    if subset.layout != "auto":
        return subset.layout
    if subset.metadata_file:
        return "metadata_jsonl" if subset.metadata_file.endswith(".jsonl") else "kohya_json"
    if subset.image_dir and subset.image_dir.endswith(".parquet"):
        return "hf_dataset"
    if subset.image_dir:
        found = detect_layout(subset.image_dir)
        if found in ("metadata_jsonl", "image_text_pairs", "hf_dataset"):
            return found
    return "images"


def scan_subset(subset: SubsetParams, issues: Issues) -> List[ImageRecord]:
    """Records of one subset, whatever its layout."""
    layout = subset_layout(subset)
    if layout == "images":
        return scan_image_folder(subset, issues)
    if layout == "metadata_jsonl":
        return scan_metadata_jsonl(subset, issues)
    if layout == "image_text_pairs":
        return scan_image_text_pairs(subset, issues)
    if layout == "kohya_json":
        return scan_kohya_json(subset, issues)
    if layout == "hf_dataset":
        from .hf_datasets import scan_hf_dataset

        return scan_hf_dataset(subset, issues)
    raise DatasetError(f"unknown layout {layout!r} for subset {subset.name}; use one of images, metadata_jsonl, image_text_pairs, hf_dataset, kohya_json")


def _record(path: str, caption: str, subset: SubsetParams, root: str) -> ImageRecord:
    return ImageRecord(
        key=os.path.abspath(path),
        path=path,
        caption=caption,
        subset=subset,
        cache_stem=_cache_stem(path, root),
        num_repeats=subset.num_repeats,
    )


OUTSIDE_CACHE_DIR = "_lorasmith_outside_cache"


def is_inside(path: str, root: str) -> bool:
    """True when ``path`` (lexically, after making both absolute) lies in ``root``."""
    path, root = os.path.abspath(path), os.path.abspath(root)
    return os.path.commonpath([path, root]) == root


def _cache_stem(path: str, root: str) -> str:
    """Caches sit next to the image, or for an image outside the dataset in a folder inside it."""
    if is_inside(path, root):
        return os.path.splitext(path)[0]
    digest = hashlib.sha1(os.path.abspath(path).encode("utf-8", "surrogateescape")).hexdigest()[:16]
    stem = os.path.splitext(os.path.basename(path))[0]
    return os.path.join(root, OUTSIDE_CACHE_DIR, f"{digest}_{stem}")


def check_inside(path: str, root: str, subset: SubsetParams, where: str) -> None:
    """DatasetError when metadata names an image outside the dataset folder, unless the user allowed it."""
    if subset.allow_paths_outside_dataset or is_inside(path, root):
        return
    raise DatasetError(f"{where} names {path}, which is outside the dataset folder {os.path.abspath(root)} "
                       "(a ../ or absolute path); move the image into the folder, or pass "
                       "--allow_paths_outside_dataset if the metadata is yours and means it")


def _fallback(subset: SubsetParams) -> str:
    return subset.fixed_caption if subset.fixed_caption is not None else (subset.class_tokens or "")


def scan_metadata_jsonl(subset: SubsetParams, issues: Issues) -> List[ImageRecord]:
    path = subset.metadata_file or os.path.join(subset.image_dir or ".", METADATA_JSONL)
    if not os.path.isfile(path):
        raise DatasetError(f"metadata file {path} does not exist; check metadata_file / image_dir")
    base = subset.image_dir or os.path.dirname(path)
    col = subset.caption_column
    records, missing_images = [], []
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            if not raw.strip():
                continue
            try:
                row = json.loads(raw.decode("utf-8"))
            except UnicodeDecodeError:
                raise DatasetError(f"{path} line {lineno} is not UTF-8; re-save the file as UTF-8") from None
            except json.JSONDecodeError as e:
                raise DatasetError(f"{path} line {lineno} is not valid JSON ({e.msg} at column {e.colno})") from None
            if not isinstance(row, dict) or "file_name" not in row:
                raise DatasetError(f'{path} line {lineno} has no "file_name" key; each line must look like {{"file_name": "01.jpg", "text": "..."}}')
            if col not in row and subset.fixed_caption is None:
                suggestion = difflib.get_close_matches(col, [k for k in row if k != "file_name"], 1)
                hint = f' (did you mean caption_column = "{suggestion[0]}"?)' if suggestion else f" (keys: {', '.join(sorted(row))})"
                raise DatasetError(f'{path} line {lineno} has no caption key "{col}"{hint}')
            if not isinstance(row["file_name"], str) or not row["file_name"].strip():
                raise DatasetError(f'{path} line {lineno}: "file_name" must be a file name string, got {row["file_name"]!r}')
            image_path = os.path.join(base, row["file_name"])
            check_inside(image_path, base, subset, f"{path} line {lineno}")
            if not os.path.isfile(image_path):
                missing_images.append(image_path)
                continue
            text = row.get(col)
            if text is not None and not isinstance(text, (str, int, float)):
                raise DatasetError(f'{path} line {lineno}: "{col}" must be text, got {type(text).__name__}')
            caption = _fallback(subset) if subset.fixed_caption is not None or not text else str(text).strip()
            check_caption_text(caption, f'{path} line {lineno} "{col}"')
            lines = [line.strip() for line in caption_lines(caption) if line.strip()]
            caption = "\n".join(lines) if subset.enable_wildcard else (lines[0] if lines else "")
            records.append(_record(image_path, caption, subset, base))
    if missing_images:
        issues.warning(
            "image_missing",
            f"{len(missing_images)} images listed in {path} do not exist and are skipped (e.g. {missing_images[0]})",
            path,
        )
    if not records:
        issues.warning("folder_without_images", f"{path} lists no existing images; it is skipped", path)
    return records


def scan_image_text_pairs(subset: SubsetParams, issues: Issues) -> List[ImageRecord]:
    root = subset.image_dir
    image_dir, text_dir = os.path.join(root, "image"), os.path.join(root, "text")
    if not os.path.isdir(image_dir):
        raise DatasetError(f"{root} has no image/ folder; the image/text layout needs image/0.png + text/0.txt")
    texts = {}
    if os.path.isdir(text_dir):
        for name in os.listdir(text_dir):
            stem, ext = os.path.splitext(name)
            if ext.lower() in (".txt", ".caption") and is_regular_file(os.path.join(text_dir, name)):
                texts.setdefault(stem, os.path.join(text_dir, name))
    names = sorted(n for n in os.listdir(image_dir) if is_image_name(n))
    records, missing = [], []
    for name in names:
        stem = os.path.splitext(name)[0]
        caption = ""
        if subset.fixed_caption is None and stem in texts:
            try:
                caption = read_caption_file(texts[stem], subset.enable_wildcard)
            except DatasetError as e:
                issues.error("caption_not_utf8", str(e), texts[stem])
                continue
        elif subset.fixed_caption is None:
            missing.append(name)
        records.append(_record(os.path.join(image_dir, name), caption or _fallback(subset), subset, root))
    if missing:
        issues.warning("caption_missing", f"{len(missing)} images in {image_dir} have no text/<name>.txt (e.g. {missing[0]})", image_dir)
    if not records:
        issues.warning("folder_without_images", f"{image_dir} has no images ({', '.join(IMAGE_EXTENSIONS)}); it is skipped", image_dir)
    return records


def scan_kohya_json(subset: SubsetParams, issues: Issues) -> List[ImageRecord]:
    path = subset.metadata_file
    if not path or not os.path.isfile(path):
        raise DatasetError(f"metadata_file {path} does not exist; check the path (kohya's in_json)")
    try:
        with open(path, "rb") as f:
            metadata = json.loads(f.read().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DatasetError(f"metadata_file {path} is not valid UTF-8 JSON ({e})") from None
    if not isinstance(metadata, dict):
        raise DatasetError(f'metadata_file {path} must be a JSON object {{"<image>": {{"caption": ...}}}}')
    records, missing = [], []
    root = subset.image_dir or os.path.dirname(os.path.abspath(path))
    for key, md in metadata.items():
        image_path = _find_image(key, subset.image_dir)
        if image_path is None:
            missing.append(key)
            continue
        check_inside(image_path, root, subset, f"metadata_file {path} key {key!r}")
        if not isinstance(md, dict):
            raise DatasetError(f'metadata_file {path} key {key!r}: the value must be an object like '
                               f'{{"caption": "...", "tags": "..."}}, got {type(md).__name__}')
        caption, tags = md.get("caption"), md.get("tags")
        for name, value in (("caption", caption), ("tags", tags)):
            if value is not None and not isinstance(value, str):
                raise DatasetError(f'metadata_file {path} key {key!r}: "{name}" must be a string, '
                                   f'got {type(value).__name__}')
        if caption is None:
            caption, tags = tags, None
        if tags:
            caption = (caption or "") + subset.caption_separator + tags
        caption = caption or _fallback(subset)
        if subset.fixed_caption is not None:
            caption = subset.fixed_caption
        check_caption_text(caption, f"metadata_file {path} key {key!r}")
        records.append(_record(image_path, caption.strip(), subset, root))
    if missing:
        issues.warning("image_missing", f"{len(missing)} images of {path} were not found in {subset.image_dir} (e.g. {missing[0]})", path)
    return records


def _find_image(key: str, image_dir) -> str:
    if os.path.isfile(key) and is_image_name(key):
        return key
    if image_dir:
        candidate = os.path.join(image_dir, key)
        if os.path.isfile(candidate) and is_image_name(candidate):
            return candidate
        for ext in IMAGE_EXTENSIONS + tuple(e.upper() for e in IMAGE_EXTENSIONS):
            if os.path.isfile(candidate + ext):
                return candidate + ext
    return None
