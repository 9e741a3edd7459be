"""Datasets saved with the Hugging Face ``datasets`` library: ``save_to_disk`` folders and parquet files.

Why: SimpleLoRA/diffusers users bring data as a ``datasets`` dataset with an image column and a caption
column (e.g. ``en_text``). We read it locally, never from the Hub:
- a ``save_to_disk`` folder (``dataset_info.json`` + ``*.arrow``, or a ``DatasetDict`` with splits; the
  ``train`` split is used) needs ``datasets`` (imported only here, only when such a folder is used);
- ``*.parquet`` files (in the folder or its ``data/`` folder, or one file) are read with ``pyarrow``.
Images stay inside the Arrow data and are read per step; the image column may hold ``{"bytes", "path"}``
structs (the ``datasets.Image`` feature), raw bytes, or paths relative to the dataset folder.
Disk caches for such images go to ``<dataset folder>/lorasmith_cache/``.
"""

from __future__ import annotations

import difflib
import glob
import os
from typing import List, Optional

from .captions import caption_lines, check_caption_text
from .errors import DatasetError, Issues
from .params import SubsetParams
from .records import ImageRecord

PIP_DATASETS = "pip install datasets"


class ArrowImageTable:
    """A lazily opened image column; pickles as its location, so DataLoader workers reopen it."""

    def __init__(self, kind: str, location: str, files: List[str], split: Optional[str], image_column: str):
        self.kind, self.location, self.files, self.split, self.image_column = kind, location, files, split, image_column
        self._column = None
        stats = [os.stat(f) for f in files] if files else []
        self.fingerprint = ";".join(f"{s.st_size}:{s.st_mtime_ns}" for s in stats)

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_column"] = None
        return state

    def column(self):
        if self._column is None:
            self._column = _open_table(self)[self.image_column]
        return self._column

    def image_bytes(self, row: int) -> bytes:
        value = self.column()[row].as_py()
        if isinstance(value, dict):
            if value.get("bytes"):
                return value["bytes"]
            value = value.get("path")
        if isinstance(value, (bytes, bytearray)):
            return bytes(value)
        if isinstance(value, str):
            path = value if os.path.isabs(value) else os.path.join(self.location, value)
            with open(path, "rb") as f:
                return f.read()
        raise DatasetError(f"row {row} of {self.location}: image column {self.image_column!r} holds no image")


class ArrowRowBlob:
    """One image inside an ``ArrowImageTable``."""

    def __init__(self, table: ArrowImageTable, row: int):
        self.table, self.row = table, row

    def read(self) -> bytes:
        return self.table.image_bytes(self.row)

    def fingerprint(self) -> str:
        return f"{self.table.fingerprint}#{self.row}"


def _require(module: str, why: str):
    try:
        return __import__(module, fromlist=["_"])
    except ImportError:
        raise DatasetError(f"{why} needs the '{module.split('.')[0]}' package: run  {PIP_DATASETS}") from None


def _locate(path: str):
    """(kind, data files, split) for a dataset folder or parquet file."""
    if os.path.isfile(path) and path.endswith(".parquet"):
        return "parquet", [path], None
    if not os.path.isdir(path):
        raise DatasetError(f"dataset folder {path} does not exist; check image_dir / train_data_dir")
    if os.path.isfile(os.path.join(path, "dataset_dict.json")):
        splits = [d for d in sorted(os.listdir(path)) if os.path.isdir(os.path.join(path, d))]
        split = "train" if "train" in splits else (splits[0] if splits else None)
        if split is None:
            raise DatasetError(f"{path} is a saved DatasetDict without splits")
        return "arrow", sorted(glob.glob(os.path.join(path, split, "*.arrow"))), split
    arrows = sorted(glob.glob(os.path.join(path, "*.arrow")))
    if arrows or os.path.isfile(os.path.join(path, "dataset_info.json")):
        return "arrow", arrows, None
    parquets = sorted(glob.glob(os.path.join(path, "*.parquet")) + glob.glob(os.path.join(path, "data", "*.parquet")))
    train = [p for p in parquets if os.path.basename(p).startswith("train")]
    if parquets:
        return "parquet", train or parquets, None
    raise DatasetError(f"{path} holds neither a saved `datasets` dataset (*.arrow) nor parquet files")


def _open_table(table: ArrowImageTable):
    """A pyarrow Table (or datasets-backed table) with the dataset's columns."""
    if table.kind == "parquet":
        pq = _require("pyarrow.parquet", f"reading parquet files in {table.location}")
        pa = _require("pyarrow", "reading parquet files")
        return pa.concat_tables([pq.read_table(f) for f in table.files])
    datasets = _require("datasets", f"reading the saved dataset {table.location}")
    root = table.location if table.split is None else os.path.join(table.location, table.split)
    return datasets.load_from_disk(root).data


def scan_hf_dataset(subset: SubsetParams, issues: Issues) -> List[ImageRecord]:
    location = subset.image_dir or subset.metadata_file
    kind, files, split = _locate(location)
    folder = location if os.path.isdir(location) else os.path.dirname(location)
    images = ArrowImageTable(kind, folder, files, split, subset.image_column)
    data = _open_table(images)
    columns = list(data.column_names)
    for role, col in (("image_column", subset.image_column), ("caption_column", subset.caption_column)):
        if role == "caption_column" and subset.fixed_caption is not None:
            continue
        if col not in columns:
            near = difflib.get_close_matches(col, columns, 1)
            hint = f'did you mean {role} = "{near[0]}"? ' if near else ""
            raise DatasetError(f"{location} has no column {col!r} ({role}); {hint}columns: {', '.join(columns)}")
    images._column = data[subset.image_column]
    captions = [None] * data.num_rows if subset.fixed_caption is not None else data[subset.caption_column].to_pylist()
    fallback = subset.fixed_caption if subset.fixed_caption is not None else (subset.class_tokens or "")
    cache_dir = os.path.join(folder, "lorasmith_cache")
    prefix = f"{split}_" if split else ""
    records, missing = [], 0
    for row, text in enumerate(captions):
        if isinstance(text, (list, tuple)):
            text = text[0] if text else None
        caption = str(text).strip() if text else ""
        if not caption:
            missing += subset.fixed_caption is None
            caption = fallback
        check_caption_text(caption, f"{location} row {row} {subset.caption_column!r}")
        lines = [line.strip() for line in caption_lines(caption) if line.strip()]
        caption = "\n".join(lines) if subset.enable_wildcard else (lines[0] if lines else "")
        records.append(
            ImageRecord(
                key=f"{os.path.abspath(folder)}#{prefix}{row}",
                path=None,
                caption=caption,
                subset=subset,
                cache_stem=os.path.join(cache_dir, f"{prefix}{row:08d}"),
                blob=ArrowRowBlob(images, row),
                num_repeats=subset.num_repeats,
            )
        )
    if missing:
        issues.warning("caption_missing", f"{missing} rows of {location} have an empty {subset.caption_column!r}; they use {fallback!r}", location)
    if not records:
        issues.warning("folder_without_images", f"dataset {location} has no rows; it is skipped", location)
    return records
