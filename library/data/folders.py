"""kohya folder layouts: ``NN_class tokens/`` subfolders and plain image folders with caption files.

Why: this is the layout most users bring, and its rules are easy to get wrong silently, so each
rule is here once and every skipped thing becomes a warning.

Facts matched from kohya sd-scripts:
- A subfolder name is split on its first "_": the head must be an integer (the repeats), the rest is
  the class tokens (``25_Li4mG4ll4gher man`` -> 25, "Li4mG4ll4gher man"; ``1_man`` -> 1, "man"; ``5``
  -> 5, ""). Other folders (``abc``) are skipped with a warning; so are repeats < 1.
- Images directly in train_data_dir/reg_data_dir are NOT used. We warn loudly, and it is an error when
  no subfolder has images.
- An image folder is not searched recursively (kohya's glob is one level); images in deeper folders
  are reported as unused. ``recursive = true`` on a subset includes them (newer kohya has the same key).
- Image extensions: png jpg jpeg webp bmp. kohya matches only all-lower or all-upper case on Linux; we
  accept any case (``.Jpg`` too). Images are sorted by path.
- Caption: ``<image stem><caption_extension>`` next to the image (kohya default ``.caption``; a
  missing leading dot is added). Missing caption -> the class tokens, with a warning.
Deviation (documented in docs/datasets.md): an empty caption file is a warning and falls back to the
class tokens like a missing one (kohya stops with an assertion). A missing caption file where the
folder has no class tokens either is an error (kohya warns and trains on an empty caption); an empty
caption file is how to ask for an empty caption on purpose.
"""

from __future__ import annotations

import os
from typing import List, Optional, Tuple

from ..options.definitions import MAX_REPEATS
from .captions import read_caption_file
from .errors import DatasetError, Issues
from .files import is_regular_file
from .params import SubsetParams
from .records import ImageRecord

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
_SHOW = 5  # how many file names a warning lists


_EXT_SET = frozenset(e[1:] for e in IMAGE_EXTENSIONS)


def is_image_name(name: str) -> bool:
    dot = name.rfind(".")
    return dot > 0 and name[dot + 1 :].lower() in _EXT_SET


def parse_folder_name(name: str) -> Optional[Tuple[int, str]]:
    """``"25_Li4mG4ll4gher man"`` -> (25, "Li4mG4ll4gher man"); None when the head is not an integer."""
    head, _, rest = name.partition("_")
    try:
        return int(head), rest
    except ValueError:
        return None


def _scan(folder: str, specials: Optional[List[str]] = None) -> Tuple[List[str], List[str]]:
    """(regular file names, subfolder names) of one folder, sorted; hidden entries skipped.

    FIFOs, devices, sockets and broken links are left out (reading a FIFO blocks forever); their
    paths go to ``specials`` for a warning.
    """
    files, dirs = [], []
    with os.scandir(folder) as it:
        for entry in it:
            if entry.name.startswith("."):
                continue
            try:
                if entry.is_dir():
                    dirs.append(entry.name)
                elif entry.is_file():
                    files.append(entry.name)
                elif specials is not None:
                    specials.append(entry.path)
            except OSError:
                continue
    return sorted(files), sorted(dirs)


def count_images(folder: str) -> int:
    """Images directly inside ``folder`` (0 when it cannot be read)."""
    try:
        return sum(1 for n in _scan(folder)[0] if is_image_name(n))
    except OSError:
        return 0


def discover_repeat_folders(root: str, is_reg: bool, issues: Issues) -> List[Tuple[str, int, str]]:
    """kohya's ``NN_class`` subfolders of ``root`` as (path, repeats, class_tokens), sorted by name."""
    what = "reg_data_dir" if is_reg else "train_data_dir"
    if not os.path.exists(root):
        raise DatasetError(f"{what} {root} does not exist; check the path")
    if not os.path.isdir(root):
        raise DatasetError(f"{what} {root} is a file, not a folder")
    files, dirs = _scan(root)
    found = []
    for name in dirs:
        if name == "__pycache__":
            continue
        path = os.path.join(root, name)
        parsed = parse_folder_name(name)
        if parsed is None:
            issues.warning(
                "folder_without_repeats",
                f"folder {path} is skipped: its name does not start with a repeat count "
                f"(rename it like 10_{name} for 10 repeats)",
                path,
            )
            continue
        repeats, tokens = parsed
        if repeats > MAX_REPEATS:
            raise DatasetError(f"folder {path}: {repeats} repeats is more than {MAX_REPEATS}; one epoch would not fit "
                               "in memory. Rename it with fewer repeats (and train more epochs)")
        if repeats < 1:
            issues.warning("folder_zero_repeats", f"folder {path} is skipped: repeats {repeats} is less than 1", path)
            continue
        found.append((path, repeats, tokens))
    root_images = [n for n in files if is_image_name(n)]
    if root_images:
        example = root_images[0]
        issues.warning(
            "images_in_root",
            f"{len(root_images)} images directly in {what} {root} are NOT used (e.g. {example}): kohya's layout only "
            f"reads subfolders named like {os.path.join(root, '10_mysubject')}. Move the images (and captions) into "
            "such a subfolder, or use a flat folder on purpose with --instance_prompt / --class_prompt or a dataset_config.",
            root,
        )
    return found


def list_images(folder: str, recursive: bool = False, specials: Optional[List[str]] = None
                ) -> Tuple[List[str], List[str], List[str]]:
    """(image paths relative to ``folder``, other file names of the top folder, subfolders holding unused images).

    Entries that are not regular files (FIFOs, devices, sockets) are never listed; see ``_scan``.
    """
    files, dirs = _scan(folder, specials)
    images = [n for n in files if is_image_name(n)]
    others = [n for n in files if not is_image_name(n)]
    unused_dirs = []
    for d in dirs:
        sub = os.path.join(folder, d)
        if recursive:
            for dirpath, dirnames, filenames in os.walk(sub):
                dirnames[:] = sorted(x for x in dirnames if not x.startswith("."))
                rel = os.path.relpath(dirpath, folder)
                for n in filenames:
                    if not is_image_name(n) or n.startswith("."):
                        continue
                    if is_regular_file(os.path.join(dirpath, n)):
                        images.append(os.path.join(rel, n))
                    elif specials is not None:
                        specials.append(os.path.join(dirpath, n))
        elif count_images(sub):
            unused_dirs.append(sub)
    return sorted(images), others, unused_dirs


def normalize_extension(ext: str) -> str:
    return ext if not ext or ext.startswith(".") else "." + ext


def scan_image_folder(subset: SubsetParams, issues: Issues) -> List[ImageRecord]:
    """Records for every image in ``subset.image_dir`` with its caption (file, class tokens or fixed)."""
    folder = subset.image_dir
    _check_image_dir(folder)
    specials: List[str] = []
    images, others, unused_dirs = list_images(folder, subset.recursive, specials)
    _report_skipped(folder, specials, unused_dirs, issues)
    if not images:
        issues.warning("folder_without_images", f"folder {folder} has no images ({', '.join(IMAGE_EXTENSIONS)}); it is skipped", folder)
        return []
    records, missing, empty = _records_with_captions(subset, images, set(others), issues)
    _report_captions(subset, images, others, missing, empty, issues)
    return records


def _check_image_dir(folder) -> None:
    if folder is None:
        raise DatasetError("a subset has no image_dir; set image_dir to the folder holding its images")
    if not os.path.exists(folder):
        raise DatasetError(f"image_dir {folder} does not exist; check the path")
    if not os.path.isdir(folder):
        raise DatasetError(f"image_dir {folder} is a file, not a folder")


def _report_skipped(folder: str, specials: List[str], unused_dirs, issues: Issues) -> None:
    """Entries that are not regular files, and image folders below a non-recursive one."""
    if specials:
        issues.warning(
            "not_a_regular_file",
            f"{len(specials)} entries in {folder} are not regular files (FIFOs, devices, sockets or broken links) "
            f"and are skipped: {', '.join(os.path.basename(p) for p in specials[:_SHOW])}",
            folder,
            len(specials),
        )
    for sub in unused_dirs:
        issues.warning(
            "nested_images_unused",
            f"{count_images(sub)} images in {sub} are not used: image folders are not searched recursively "
            "(as in kohya). Move them up one level, or set recursive = true for this subset.",
            sub,
        )


def _fallback_caption(subset: SubsetParams) -> str:
    return subset.fixed_caption if subset.fixed_caption is not None else (subset.class_tokens or "")


def _records_with_captions(subset: SubsetParams, images: List[str], top_level: set, issues: Issues):
    """(records, images without a caption file, empty caption files). ``top_level``: the names in the
    folder itself, so caption lookups there need no extra system call."""
    folder = subset.image_dir
    ext = normalize_extension(subset.caption_extension)
    abs_folder = os.path.abspath(folder)
    fallback = _fallback_caption(subset)
    missing, empty, records = [], [], []
    for rel in images:
        path = os.path.join(folder, rel)
        stem = path[: path.rfind(".")]
        caption = None
        if subset.fixed_caption is None:
            cap_rel = rel[: rel.rfind(".")] + ext
            cap_path = stem + ext
            if (cap_rel in top_level) if os.sep not in rel else os.path.isfile(cap_path):
                try:
                    caption = read_caption_file(cap_path, subset.enable_wildcard)
                except DatasetError as e:
                    issues.error("caption_not_utf8", str(e), cap_path)
                    continue
                if not caption:
                    empty.append(cap_path)
                    caption = None
            else:
                missing.append(path)
        records.append(
            ImageRecord(
                key=os.path.join(abs_folder, rel),
                path=path,
                caption=fallback if caption is None else caption,
                subset=subset,
                cache_stem=stem,
                num_repeats=subset.num_repeats,
            )
        )
    return records, missing, empty


def _report_captions(subset: SubsetParams, images, others, missing, empty, issues: Issues) -> None:
    """Missing caption files (an error without class tokens to fall back on) and empty ones."""
    folder = subset.image_dir
    ext = normalize_extension(subset.caption_extension)
    fallback = _fallback_caption(subset)
    use = f'the class tokens "{fallback}"' if fallback else "an empty caption"
    if missing and not fallback:  # kohya trains these on "" with a warning; almost always a mistake
        issues.error(
            "caption_missing_no_class",
            f"{len(missing)} of {len(images)} images in {folder} have no {ext} caption file and the folder gives no "
            f"class tokens (e.g. {', '.join(os.path.basename(p) for p in missing[:_SHOW])}); add caption files, "
            "name the folder NN_<class tokens> (e.g. 10_sks dog), or fix --caption_extension "
            "(an empty caption file asks for an empty caption)",
            folder,
            len(missing),
        )
        _hint_caption_extension(folder, others, images, ext, len(missing), issues)
        return
    if missing:
        # reg images normally have no captions: their class tokens are the caption
        (issues.info if subset.is_reg and fallback else issues.warning)(
            "caption_missing",
            f"{len(missing)} of {len(images)} images in {folder} have no {ext} caption file; they use {use} "
            f"(e.g. {', '.join(os.path.basename(p) for p in missing[:_SHOW])})",
            folder,
            len(missing),
        )
        _hint_caption_extension(folder, others, images, ext, len(missing), issues)
    if empty:
        issues.warning(
            "caption_empty",
            f"{len(empty)} caption files in {folder} are empty; they use {use} "
            f"(e.g. {', '.join(os.path.basename(p) for p in empty[:_SHOW])})",
            folder,
            len(empty),
        )


def _hint_caption_extension(folder, others, images, ext, n_missing, issues: Issues) -> None:
    """When most captions are missing but files with another extension match the images, say so."""
    stems = {os.path.splitext(os.path.basename(p))[0] for p in images}  # images: relative paths
    counts = {}
    for name in others:
        stem, e = os.path.splitext(name)
        if stem in stems and e.lower() != ext.lower():
            counts[e] = counts.get(e, 0) + 1
    if counts:
        best, n = max(counts.items(), key=lambda kv: kv[1])
        if n >= n_missing / 2:
            issues.warning(
                "caption_extension_mismatch",
                f"{folder} has {n} {best} files named like the images but caption_extension is {ext}: "
                f"pass --caption_extension {best} (kohya's default is .caption)",
                folder,
            )
