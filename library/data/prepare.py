"""From ``DatasetParams`` to prepared records: scan, read sizes, balance reg images, assign buckets.

Why: both training (dataset.py) and the preflight need exactly the same numbers (images, repeats,
buckets, batches), computed without loading any model. Everything here reads file headers only.

Regularisation balance (kohya's DreamBoothDataset): train count = sum of repeats x images of the
non-reg subsets. Reg images are taken in order, each with its folder's repeats, until their sum reaches
the train count (later ones are unused); if the pass ends short, +1 repeat is handed out round-robin
until the sums are equal. So an epoch holds 2 x train count samples. Each reg sample's loss is
multiplied by ``prior_loss_weight``.
"""

from __future__ import annotations

import math
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import List, Optional, Sequence, Tuple

from ..options.definitions import MAX_SAMPLES_PER_EPOCH
from .buckets import BucketSelector, bucket_table, validate_bucket_options
from .captions import tag_frequency
from .dataset_config import resolve_datasets
from .errors import DatasetError, Issues
from .image_size import read_image_size
from .layouts import scan_subset
from .params import DataOptions, DatasetParams, SubsetParams
from .records import ImageRecord
from .masks import attach_masks, check_masked_loss
from .validation_split import split_records

_SHOW = 5


@dataclass
class SubsetSummary:
    """Per-subset counts for reports and the ``ss_dataset_dirs`` metadata."""

    subset: SubsetParams
    images: int = 0
    skipped: int = 0


@dataclass
class PreparedDataset:
    """A dataset ready for batching: used records (final repeats, buckets) and its counts."""

    params: DatasetParams
    records: List[ImageRecord]
    subsets: List[SubsetSummary]
    num_train_images: int
    num_reg_images: int
    unused_reg: List[ImageRecord] = field(default_factory=list)
    bad_images: List[str] = field(default_factory=list)
    validation: List[ImageRecord] = field(default_factory=list)  # held out (validation_split), bucketed, never trained

    def validation_dataset(self) -> Optional["PreparedDataset"]:
        """The held-out images as a dataset of their own (same buckets and batch size), or None."""
        if not self.validation:
            return None
        return PreparedDataset(self.params, list(self.validation), [], len(self.validation), 0)

    @property
    def buckets(self) -> List[Tuple[Tuple[int, int], int]]:
        """[(bucket (w, h), samples incl. repeats)] sorted by bucket."""
        return bucket_table([(r.bucket_reso, r.num_repeats) for r in self.records])

    @property
    def samples_per_epoch(self) -> int:
        return sum(r.num_repeats for r in self.records)

    @property
    def batches_per_epoch(self) -> int:
        """Batches are formed within a bucket, so each bucket ends with its own short batch."""
        bs = self.params.batch_size
        return sum(math.ceil(n / bs) for _, n in self.buckets)

    def mean_ar_error(self) -> float:
        errors = [abs(r.bucket_reso[0] / r.bucket_reso[1] - r.size[0] / r.size[1]) for r in self.records]
        return sum(errors) / len(errors) if errors else 0.0

    def metadata(self) -> dict:
        """kohya-style ``ss_*`` inputs: bucket_info, tag_frequency, dataset_dirs."""
        return {
            "bucket_info": {
                "buckets": {i: {"resolution": list(reso), "count": n} for i, (reso, n) in enumerate(self.buckets)},
                "mean_img_ar_error": self.mean_ar_error(),
            },
            "tag_frequency": {
                s.subset.name: tag_frequency((r.caption for r in self.records if r.subset is s.subset), s.subset.caption_separator)
                for s in self.subsets
            },
            "dataset_dirs": {s.subset.name: {"n_repeats": s.subset.num_repeats, "img_count": s.images} for s in self.subsets},
            # the rest feeds kohya's ss_datasets / ss_reg_dataset_dirs (library/train/metadata.py)
            "is_dreambooth": not any(s.subset.metadata_file for s in self.subsets),
            "batch_size_per_device": self.params.batch_size,
            "num_train_images": self.num_train_images,
            "num_reg_images": self.num_reg_images,
            "resolution": self.params.resolution,
            "enable_bucket": self.params.enable_bucket,
            "min_bucket_reso": self.params.min_bucket_reso,
            "max_bucket_reso": self.params.max_bucket_reso,
            "bucket_no_upscale": self.params.bucket_no_upscale,
            "subsets": [_subset_metadata(s) for s in self.subsets],
        }


def _subset_metadata(summary: SubsetSummary) -> dict:
    """One subset as kohya's ss_datasets describes it (folder names only, never full paths)."""
    sub = summary.subset
    out = {
        "img_count": summary.images, "num_repeats": sub.num_repeats, "color_aug": bool(sub.color_aug),
        "flip_aug": bool(sub.flip_aug), "random_crop": bool(sub.random_crop), "shuffle_caption": bool(sub.shuffle_caption),
        "keep_tokens": sub.keep_tokens, "keep_tokens_separator": sub.keep_tokens_separator,
        "secondary_separator": sub.secondary_separator, "enable_wildcard": bool(sub.enable_wildcard),
        "caption_prefix": sub.caption_prefix, "caption_suffix": sub.caption_suffix,
        "resize_interpolation": sub.resize_interpolation, "is_reg": bool(sub.is_reg), "name": sub.name,
    }
    if sub.image_dir:
        out["image_dir"] = os.path.basename(os.path.normpath(sub.image_dir))
    if sub.metadata_file:
        out["metadata_file"] = os.path.basename(sub.metadata_file)
    else:
        out["class_tokens"] = sub.class_tokens
    return out


def read_sizes(records: Sequence[ImageRecord], workers: int = 0) -> List[Optional[Exception]]:
    """Fill ``record.size`` from headers; returns the DatasetError (or None) per record."""

    def one(rec: ImageRecord):
        if rec.size is not None:
            return None
        try:
            rec.size = read_image_size(rec.source())
            return None
        except DatasetError as e:
            return e

    if workers and workers > 1 and len(records) > 256:
        with ThreadPoolExecutor(workers) as pool:
            return list(pool.map(one, records, chunksize=256))
    return [one(r) for r in records]


def balance_regularization(train_count: int, reg_records: List[ImageRecord]) -> Tuple[List[ImageRecord], List[ImageRecord]]:
    """kohya's reg balancing; updates ``num_repeats`` in place; returns (used, unused)."""
    if train_count <= 0 or not reg_records:
        return [], list(reg_records)
    used, n = [], 0
    for rec in reg_records:
        used.append(rec)
        n += rec.num_repeats
        if n >= train_count:
            break
    while n < train_count:
        for rec in used:
            rec.num_repeats += 1
            n += 1
            if n >= train_count:
                break
    return used, reg_records[len(used):]


def prepare_dataset(params: DatasetParams, issues: Optional[Issues] = None, *, stop_on_bad_image: bool = False, workers: int = 0,
                    where: str = "dataset", seed: Optional[int] = None, masked_loss: bool = False) -> PreparedDataset:
    """Scan all subsets of one dataset, hold out validation images, read sizes, balance reg images and assign buckets.

    ``seed`` shuffles the validation split when the dataset has no ``validation_seed`` (the run's --seed)."""
    issues = issues if issues is not None else Issues()
    validate_bucket_options(params.resolution, params.enable_bucket, params.min_bucket_reso, params.max_bucket_reso, params.bucket_reso_steps, where)
    summaries, train, reg, bad, held_out = [], [], [], [], []
    split_seed = params.validation_seed if params.validation_seed is not None else (seed or 0)
    for subset in _distinct_subsets(params.subsets, issues):
        records = scan_subset(subset, issues)
        summary = SubsetSummary(subset)
        summaries.append(summary)
        good = _readable(records, workers, stop_on_bad_image, bad, issues)
        summary.skipped = len(records) - len(good)
        if masked_loss:
            attach_masks(good, issues)
        if params.validation_split > 0 and not subset.is_reg:  # kohya never splits reg subsets
            good, validation = split_records(good, params.validation_split, split_seed)
            held_out.extend(validation)
        summary.images = len(good)
        (reg if subset.is_reg else train).extend(good)
    return _balance_and_bucket(params, summaries, train, reg, held_out, bad, issues, where, stop_on_bad_image)


def _distinct_subsets(subsets, issues: Issues):
    """The subsets to scan: those with repeats, each folder/metadata file once (as kohya)."""
    seen = set()
    for subset in subsets:
        src = os.path.abspath(subset.image_dir or subset.metadata_file or "")
        if subset.num_repeats < 1:
            issues.warning("subset_zero_repeats", f"subset {src} is skipped: num_repeats {subset.num_repeats} is less than 1", src)
            continue
        if (src, subset.metadata_file) in seen:
            issues.warning("subset_duplicate", f"subset {src} is listed twice; the second one is skipped (as in kohya)", src)
            continue
        seen.add((src, subset.metadata_file))
        yield subset


def _readable(records: List[ImageRecord], workers: int, stop_on_bad_image: bool, bad: List[str], issues: Issues) -> List[ImageRecord]:
    """The records whose image size could be read; the others are skipped with a warning (or stop the run)."""
    good = []
    for rec, err in zip(records, read_sizes(records, workers)):
        if err is None:
            good.append(rec)
            continue
        if stop_on_bad_image:
            raise DatasetError(f"{err} (stop_on_bad_image is set)")
        bad.append(rec.display_name)
        issues.warning("image_unreadable", f"skipped: {err}", rec.display_name)
    return good


def _balance_and_bucket(params: DatasetParams, summaries, train, reg, held_out, bad, issues: Issues, where: str,
                        stop_on_bad_image: bool) -> PreparedDataset:
    """Reg images balanced against the training samples (as kohya), then every image in its bucket."""
    if not train:
        issues.raise_if_errors()  # the errors that emptied the dataset (e.g. undecodable captions) say more
        raise DatasetError(f"{where}: no training images found (checked: {', '.join(s.subset.image_dir or str(s.subset.metadata_file) for s in summaries) or 'no subsets'})")
    _warn_tiny(train + reg, params, issues)
    num_train = sum(r.num_repeats for r in train)
    num_reg = sum(r.num_repeats for r in reg)
    if num_train > MAX_SAMPLES_PER_EPOCH:
        raise DatasetError(f"{where}: {num_train} samples per epoch (images x repeats) is more than {MAX_SAMPLES_PER_EPOCH:,}; "
                           "one epoch would not fit in memory. Lower the repeats and train more epochs instead")
    used_reg, unused_reg = balance_regularization(num_train, reg)
    if reg and unused_reg:
        issues.info("reg_unused", f"{len(unused_reg)} of {len(reg)} reg images are not used: {num_reg} reg samples exceed {num_train} train samples (as in kohya)")
    selector = BucketSelector(
        params.resolution, params.enable_bucket, params.min_bucket_reso, params.max_bucket_reso, params.bucket_reso_steps, params.bucket_no_upscale
    )
    records = _assign_buckets(train + used_reg, selector, issues, stop_on_bad_image)
    validation = _assign_buckets(held_out, selector, issues, stop_on_bad_image)
    if params.validation_split > 0 and not validation:
        issues.warning("validation_empty", f"{where}: validation_split {params.validation_split} holds out no image "
                       f"({num_train} training samples); no validation loss will be computed for it")
    return PreparedDataset(params, records, summaries, num_train, num_reg, unused_reg, bad, validation)


def _assign_buckets(candidates: List[ImageRecord], selector: BucketSelector, issues: Issues, stop_on_bad_image: bool) -> List[ImageRecord]:
    records = []
    for rec in candidates:
        try:
            a = selector.select(*rec.size)
        except DatasetError as e:
            if stop_on_bad_image:
                raise DatasetError(f"{rec.display_name}: {e}") from None
            issues.warning("image_too_small", f"skipped {rec.display_name}: {e}", rec.display_name)
            continue
        rec.bucket_reso, rec.resized_size = a.reso, a.resized_size
        records.append(rec)
    return records


def _warn_tiny(records: List[ImageRecord], params: DatasetParams, issues: Issues) -> None:
    area = params.resolution[0] * params.resolution[1]
    tiny = [r for r in records if r.size[0] * r.size[1] * 4 < area]
    if tiny:
        names = ", ".join(f"{os.path.basename(r.display_name)} ({r.size[0]}x{r.size[1]})" for r in tiny[:_SHOW])
        what = "cropped to small buckets" if params.bucket_no_upscale else "upscaled more than 2x (blurry)"
        issues.warning("image_tiny", f"{len(tiny)} images are under a quarter of the training area {params.resolution} and will be {what}: {names}")


def prepare_datasets(options: DataOptions, issues: Optional[Issues] = None, workers: int = 0,
                     raise_errors: bool = True) -> List[PreparedDataset]:
    """All datasets described by ``options`` (dataset_config or folders), prepared.

    With ``raise_errors=False`` the caller reads the errors from ``issues`` (e.g. to report them first).
    """
    issues = issues if issues is not None else Issues()
    params = resolve_datasets(options, issues)
    many = len(params) > 1
    prepared = [
        prepare_dataset(p, issues, stop_on_bad_image=options.stop_on_bad_image, workers=workers, where=f"dataset #{i}" if many else "dataset",
                        seed=options.seed, masked_loss=options.masked_loss)
        for i, p in enumerate(params, 1)
    ]
    if options.masked_loss:
        check_masked_loss([r for p in prepared for r in p.records], issues)
    if raise_errors:
        issues.raise_if_errors()
    return prepared
