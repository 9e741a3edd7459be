"""Dataset preflight: everything about a dataset a user should see before a training run starts.

Why: the commonest failed kohya runs are dataset mistakes (images in the root folder, a folder without a
repeat count, ``.txt`` captions with the ``.caption`` default, confusing reg/step arithmetic). The
preflight reads folders, captions and image headers only (no model, seconds for 100k images) and
returns a structured ``PreflightReport`` with a text rendering; ``fatal`` is set when training could
not start. ``tools/check_dataset.py`` is the command-line front end.

Steps, as in kohya: batches per epoch = sum over buckets of ceil(samples / batch size); steps per
epoch = ceil(batches / processes / gradient accumulation); total = epochs x steps per epoch, or
``max_train_steps`` (kohya's default 1600 when neither is given) with epochs = ceil(total / steps per epoch).
"""

from __future__ import annotations

import math
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import List, Optional

from .captions import captions_are_static
from .errors import DatasetError, Issue, Issues
from .images import load_image
from .layouts import subset_layout
from ..options.definitions import BY_NAME
from .params import DataOptions
from .prepare import PreparedDataset, prepare_datasets

KOHYA_DEFAULT_MAX_TRAIN_STEPS = BY_NAME["max_train_steps"].default  # 1600, kohya's


@dataclass
class FolderRow:
    dataset: int
    path: str
    kind: str  # "train" | "reg"
    layout: str
    repeats: int
    images: int
    samples: int  # per epoch, after reg balancing
    captions_missing: int = 0
    captions_empty: int = 0
    unreadable: int = 0
    reg_unused: int = 0


@dataclass
class BucketRow:
    dataset: int
    width: int
    height: int
    samples: int
    batches: int


@dataclass
class PreflightReport:
    folders: List[FolderRow] = field(default_factory=list)
    buckets: List[BucketRow] = field(default_factory=list)
    issues: List[Issue] = field(default_factory=list)
    num_train_images: int = 0
    num_reg_images: int = 0
    reg_samples_used: int = 0
    num_validation_images: int = 0  # held out by validation_split, never trained
    samples_per_epoch: int = 0
    batches_per_epoch: int = 0
    steps_per_epoch: int = 0
    epochs: int = 0
    total_steps: int = 0
    num_processes: int = 1
    gradient_accumulation_steps: int = 1
    datasets: List[dict] = field(default_factory=list)  # resolution, batch size, bucket options per dataset
    seconds: float = 0.0
    fatal: bool = False

    def to_dict(self) -> dict:
        return asdict(self)

    def to_text(self) -> str:
        return render_text(self)


def compute_steps(batches: int, num_processes: int = 1, grad_accum: int = 1, max_train_epochs=None, max_train_steps=None):
    """(steps per epoch, epochs, total steps) with kohya's arithmetic."""
    steps_per_epoch = math.ceil(batches / max(num_processes, 1) / max(grad_accum, 1)) if batches else 0
    if max_train_epochs:
        return steps_per_epoch, max_train_epochs, max_train_epochs * steps_per_epoch
    total = max_train_steps or KOHYA_DEFAULT_MAX_TRAIN_STEPS
    epochs = math.ceil(total / steps_per_epoch) if steps_per_epoch else 0
    return steps_per_epoch, epochs, total


def run_preflight(
    options: DataOptions,
    *,
    max_train_epochs: Optional[int] = None,
    max_train_steps: Optional[int] = None,
    gradient_accumulation_steps: int = 1,
    num_processes: int = 1,
    verify_images: bool = False,
    workers: int = 0,
) -> PreflightReport:
    """Check the dataset ``options`` describe; never raises for user mistakes (they become issues).

    ``workers`` > 1 reads headers on threads: slower on a local disk whose files are cached (the GIL),
    faster on network or spinning disks.
    """
    t0 = time.perf_counter()
    issues = Issues(log=False)
    prepared: List[PreparedDataset] = []
    try:
        prepared = prepare_datasets(options, issues, workers, raise_errors=False)  # the trainer's own preparation
        if verify_images:
            _verify(prepared, issues, options.stop_on_bad_image, workers)
        check_caching(options, prepared, issues)
    except DatasetError as e:
        issues.error("fatal", str(e))
    return build_report(
        prepared, issues, max_train_epochs=max_train_epochs, max_train_steps=max_train_steps,
        gradient_accumulation_steps=gradient_accumulation_steps, num_processes=num_processes, started=t0,
    )


def build_report(
    prepared: List[PreparedDataset],
    issues: Issues,
    *,
    max_train_epochs: Optional[int] = None,
    max_train_steps: Optional[int] = None,
    gradient_accumulation_steps: int = 1,
    num_processes: int = 1,
    started: Optional[float] = None,
) -> PreflightReport:
    """The report for datasets already prepared: training prepares them once and reports from them."""
    report = PreflightReport(num_processes=num_processes, gradient_accumulation_steps=gradient_accumulation_steps)
    for d, ds in enumerate(prepared, 1):
        _fill_dataset(report, d, ds, issues)
    report.batches_per_epoch = sum(ds.batches_per_epoch for ds in prepared)
    report.steps_per_epoch, report.epochs, report.total_steps = compute_steps(
        report.batches_per_epoch, num_processes, gradient_accumulation_steps, max_train_epochs, max_train_steps
    )
    report.issues = list(issues)
    report.fatal = bool(issues.errors) or not prepared
    report.seconds = time.perf_counter() - started if started is not None else 0.0
    return report


def _fill_dataset(report: PreflightReport, d: int, ds: PreparedDataset, issues: Issues) -> None:
    p = ds.params
    report.datasets.append(
        {
            "resolution": list(p.resolution),
            "batch_size": p.batch_size,
            "enable_bucket": p.enable_bucket,
            "bucket_no_upscale": p.bucket_no_upscale,
            "min_bucket_reso": p.min_bucket_reso,
            "max_bucket_reso": p.max_bucket_reso,
            "bucket_reso_steps": p.bucket_reso_steps,
            "prior_loss_weight": p.prior_loss_weight,
        }
    )
    counts = {}
    for issue in issues:
        if issue.code in ("caption_missing", "caption_empty") and issue.path:
            key = (issue.code, os.path.abspath(issue.path))
            counts[key] = counts.get(key, 0) + (issue.count or 0)
    for s in ds.subsets:
        sub = s.subset
        src = sub.image_dir or sub.metadata_file or ""
        samples = sum(r.num_repeats for r in ds.records if r.subset is sub)
        report.folders.append(
            FolderRow(
                dataset=d,
                path=src,
                kind="reg" if sub.is_reg else "train",
                layout=subset_layout(sub),
                repeats=sub.num_repeats,
                images=s.images,
                samples=samples,
                captions_missing=counts.get(("caption_missing", os.path.abspath(src)), 0),
                captions_empty=counts.get(("caption_empty", os.path.abspath(src)), 0),
                unreadable=s.skipped,
                reg_unused=sum(1 for r in ds.unused_reg if r.subset is sub),
            )
        )
    for (w, h), n in ds.buckets:
        report.buckets.append(BucketRow(d, w, h, n, math.ceil(n / p.batch_size)))
    report.num_train_images += ds.num_train_images
    report.num_reg_images += ds.num_reg_images
    report.reg_samples_used += sum(r.num_repeats for r in ds.records if r.is_reg)
    report.num_validation_images += len(ds.validation)
    report.samples_per_epoch += ds.samples_per_epoch


def check_caching(options: DataOptions, prepared: List[PreparedDataset], issues: Issues) -> None:
    """Say now what caching will do: off with color_aug/random_crop; impossible with changing captions."""
    if options.cache_latents or options.cache_latents_to_disk:
        # cache.latent_caching_blockers says the same, but importing cache would pull torch into the preflight
        blockers = sorted({s.subset.name for ds in prepared for s in ds.subsets if s.subset.color_aug or s.subset.random_crop})
        if blockers:
            issues.warning("latent_cache_off", f"latent caching will be off: color_aug/random_crop need new pixels every step in {', '.join(blockers)}")
    if options.cache_text_encoder_outputs or options.cache_text_encoder_outputs_to_disk:
        changing = sorted({s.subset.name for ds in prepared for s in ds.subsets if not captions_are_static(s.subset)})
        if changing:
            issues.error(
                "text_cache_impossible",
                f"cache_text_encoder_outputs needs fixed captions, but they change every step in {', '.join(changing)} "
                "(shuffle_caption, caption dropout or wildcards): turn those off or drop the caching option",
            )


def _verify(prepared: List[PreparedDataset], issues: Issues, stop: bool, workers: int) -> None:
    """Decode every image (reduced) to find files whose header is fine but whose data is broken."""
    records = [r for ds in prepared for r in ds.records]

    def check(rec):
        try:
            load_image(rec.source(), rec.display_name, target=(64, 64))
            return None
        except DatasetError as e:
            return e

    with ThreadPoolExecutor(max(workers, 2)) as pool:
        for rec, err in zip(records, pool.map(check, records)):
            if err is not None:
                (issues.error if stop else issues.warning)("image_corrupt", f"{err} (it will be {'fatal' if stop else 'skipped'})", rec.display_name)


def render_text(r: PreflightReport) -> str:
    lines = [f"Dataset check ({r.seconds:.1f} s, headers only, no model loaded)", ""]
    if r.folders:
        lines.append("Folders")
        lines.append(f"  {'kind':5} {'repeats':>7} {'images':>7} {'samples':>8} {'no caption':>10} {'empty cap':>9} {'unreadable':>10}  folder")
        for f in r.folders:
            extra = f"  ({f.reg_unused} reg images unused)" if f.reg_unused else ""
            layout = "" if f.layout == "images" else f"  [{f.layout}]"
            lines.append(
                f"  {f.kind:5} {f.repeats:>7} {f.images:>7} {f.samples:>8} {f.captions_missing:>10} {f.captions_empty:>9} {f.unreadable:>10}  {f.path}{layout}{extra}"
            )
        lines.append("")
        if r.num_reg_images:
            lines.append(
                f"Regularisation: {r.num_train_images} train samples (sum of repeats x images) vs {r.num_reg_images} reg samples "
                f"-> {r.reg_samples_used} reg samples used per epoch, each with loss x prior_loss_weight"
            )
        else:
            lines.append(f"Training samples per epoch: {r.num_train_images} (sum of repeats x images); no regularisation images")
        if r.num_validation_images:
            lines.append(f"Validation: {r.num_validation_images} images held out by validation_split (never trained)")
        lines.append("")
    for d, info in enumerate(r.datasets, 1):
        w, h = info["resolution"]
        mode = "buckets" if info["enable_bucket"] else "no buckets (one size)"
        if info["enable_bucket"] and info["bucket_no_upscale"]:
            mode += ", no upscale"
        lines.append(f"Buckets of dataset {d}: resolution {w}x{h}, batch size {info['batch_size']}, {mode}")
        lines.append(f"  {'bucket':>11} {'samples':>8} {'batches':>8}")
        for b in (b for b in r.buckets if b.dataset == d):
            lines.append(f"  {f'{b.width}x{b.height}':>11} {b.samples:>8} {b.batches:>8}")
        lines.append("")
    if r.batches_per_epoch:
        lines.append(
            f"Steps: {r.samples_per_epoch} samples -> {r.batches_per_epoch} batches per epoch -> {r.steps_per_epoch} steps per epoch "
            f"({r.num_processes} process(es), gradient accumulation {r.gradient_accumulation_steps}); "
            f"{r.epochs} epochs = {r.total_steps} total steps"
        )
        lines.append("")
    shown = [i for i in r.issues if i.level in ("error", "warning")]
    if shown:
        lines.append("Problems")
        for i in shown:
            lines.append(f"  {'ERROR' if i.level == 'error' else 'warn '}  {i.message}")
        lines.append("")
    lines.append("Result: FATAL - training would not start (see ERROR lines)" if r.fatal else "Result: OK")
    return "\n".join(lines)
