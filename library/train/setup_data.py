"""From the options to the batches this process trains on: datasets, caches, sharding, step arithmetic.

Why: the step count, the data position and the caches must agree between a fresh run, a resumed
run and every process of a multi-process run. All of that is decided here from (options, seed,
epoch, rank) alone, so the loop never has to reason about it.
"""

from __future__ import annotations

import logging
import math
import os
import time
from dataclasses import dataclass

import torch

from library.data.cache import latent_cache_for, make_vae_encoder
from library.data.dataset import TrainDataset
from library.data.errors import Issues
from library.data.images import check_opencv
from library.data.params import DataOptions
from library.options.typed import from_args
from library.data.prepare import prepare_datasets
from library.data.preflight import build_report, check_caching, compute_steps
from library.data.text_cache import TextEncoderOutputCache
from library.train.memory import after_latent_cache, release_text_encoders
from library.inference.text_encoding import encode_captions

logger = logging.getLogger("lorasmith.train")


def data_options(args) -> DataOptions:
    """The dataset options out of the full option namespace (same names, one schema)."""
    return from_args(DataOptions, args)


@dataclass(frozen=True)
class StepPlan:
    """How many batches, steps and epochs this run has, per kohya's arithmetic."""

    batches_per_epoch: int  # all processes together
    micro_per_rank: int  # batches one process sees per epoch
    steps_per_epoch: int  # optimizer steps per epoch
    num_epochs: int
    max_train_steps: int


def plan_steps(batches: int, world: int, accum: int, max_train_epochs=None, max_train_steps=None) -> StepPlan:
    steps_per_epoch, epochs, total = compute_steps(batches, world, accum, max_train_epochs, max_train_steps)
    return StepPlan(batches, math.ceil(batches / world), steps_per_epoch, epochs, total)


def prepare_data(args, world: int = 1, show=None) -> list:
    """Scan the datasets once: the prepared datasets, after ``show(report text)`` is given the dataset
    report (the one tools/check_dataset.py prints); errors are raised after it is shown."""
    started = time.perf_counter()
    check_opencv()
    options = data_options(args)
    issues = Issues(log=False)
    prepared = prepare_datasets(options, issues, raise_errors=False)
    check_caching(options, prepared, issues)
    if show is not None:
        report = build_report(
            prepared, issues, max_train_epochs=args.max_train_epochs, max_train_steps=args.max_train_steps,
            gradient_accumulation_steps=args.gradient_accumulation_steps, num_processes=world, started=started,
        )
        show(report.to_text())
    issues.raise_if_errors()
    return prepared


def build_dataset(args, seed: int, prepared: list | None = None) -> TrainDataset:
    prepared = prepare_data(args) if prepared is None else prepared
    return TrainDataset(prepared, seed=seed, stop_on_bad_image=args.stop_on_bad_image, masks=bool(args.masked_loss))


def _te_encoder(model, max_token_length, weighted: bool = False):
    """captions -> {"context", "pooled"} with the frozen text encoders (for the SDXL cache)."""
    base = model.base

    @torch.no_grad()
    def run(captions):
        cond = encode_captions(base, captions, max_token_length, None, weighted, device=base.text_encoders[0].device)
        out = {"context": cond.context.float().cpu()}
        if cond.pooled is not None:
            out["pooled"] = cond.pooled.float().cpu()
        return out

    return run


def latent_cache(args, datasets: list, vae, device, vae_dtype, content_hash: str, is_sdxl: bool, progress: bool):
    """The latent cache the options ask for over ``datasets`` (TrainDatasets), not filled yet; None when
    latents are not cached (not asked for, or color_aug/random_crop need new pixels every step)."""
    encoder = make_vae_encoder(vae, device, vae_dtype, sample=True, seed=args.seed)
    key = {"model": content_hash, "vae": os.path.basename(args.vae) if args.vae else "", "vae_dtype": str(vae_dtype)}
    return latent_cache_for(data_options(args), [p for d in datasets for p in d.datasets], encoder, key,
                            arch="sdxl" if is_sdxl else "sd", progress=progress)


def attach_caches(args, dataset: TrainDataset, model, rank: int, world: int, barrier, progress: bool,
                  validation: TrainDataset | None = None, latents=None) -> None:
    """Latent and text-encoder caches as the options ask; images that fail to encode are dropped.
    The held-out ``validation`` images (if any) are cached with the same keys and dropped the same way.
    ``latents``: (cache, stats) when the latents were already cached (library/train/startup.py)."""
    both = [d for d in (dataset, validation) if d is not None]
    base = model.base
    if latents is None:
        cache = latent_cache(args, both, base.vae, model.device, model.vae_dtype, base.content_hash, base.is_sdxl, progress)
        if cache is not None:
            records = [r for d in both for r in d.records()]
            stats = cache.cache(records, rank=rank, world_size=world)
            barrier()
            if args.cache_latents_to_disk and world > 1:
                cache.cache(records)  # reuse the other ranks' files (and check them)
            latents = cache, stats
    if latents is not None:  # None: not asked for, or color_aug/random_crop need new pixels every step
        cache, stats = latents
        for d in both:
            if cache.failed:
                d.exclude(cache.failed)
            d.latent_cache = cache
        logger.info("latents: %d encoded, %d reused from disk", stats.encoded, stats.reused)
        after_latent_cache(args, model)  # parked, kept or freed: library/train/memory.py
    if args.cache_text_encoder_outputs:  # validate() made sure the text encoders are not trained
        key = {"model": base.content_hash, "dtype": str(model.weight_dtype), "max_token_length": args.max_token_length,
               **({"weighted_captions": True} if args.weighted_captions else {})}
        cache = TextEncoderOutputCache(
            _te_encoder(model, args.max_token_length, bool(args.weighted_captions)), key, to_disk=args.cache_text_encoder_outputs_to_disk, batch_size=8, progress=progress
        )
        records = [r for d in both for r in d.records()]
        cache.cache(records, rank=rank, world_size=world)
        barrier()
        if args.cache_text_encoder_outputs_to_disk and world > 1:
            cache.cache(records)
        for d in both:
            d.text_cache = cache
        release_text_encoders(args, model, main_process=rank == 0)
