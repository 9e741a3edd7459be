"""From the options to the batches this process trains on: datasets, caches, sharding, step arithmetic.

Why: the step count, the data position and the caches must agree between a fresh run, a resumed
run and every process of a multi-process run. All of that is decided here from (options, seed,
epoch, rank) alone, so the loop never has to reason about it.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass, fields

import torch

from library.data.cache import LatentCache, latent_caching_blockers, make_vae_encoder
from library.data.dataset import TrainDataset
from library.data.errors import DatasetError
from library.data.params import DataOptions
from library.data.prepare import prepare_datasets
from library.data.preflight import KOHYA_DEFAULT_MAX_TRAIN_STEPS, run_preflight
from library.data.text_cache import TextEncoderOutputCache
from library.train.text_encoding import encode, tokenize

logger = logging.getLogger("lorasmith.train")


def data_options(args) -> DataOptions:
    """The dataset options out of the full option namespace (same names, one schema)."""
    values = {f.name: getattr(args, f.name) for f in fields(DataOptions) if hasattr(args, f.name)}
    return DataOptions(**values)


@dataclass(frozen=True)
class StepPlan:
    """How many batches, steps and epochs this run has, per kohya's arithmetic."""

    batches_per_epoch: int  # all processes together
    micro_per_rank: int  # batches one process sees per epoch
    steps_per_epoch: int  # optimizer steps per epoch
    num_epochs: int
    max_train_steps: int


def plan_steps(batches: int, world: int, accum: int, max_train_epochs=None, max_train_steps=None) -> StepPlan:
    micro = math.ceil(batches / world)
    steps_per_epoch = math.ceil(micro / accum)
    if max_train_epochs:
        total = max_train_epochs * steps_per_epoch
    else:
        total = max_train_steps or KOHYA_DEFAULT_MAX_TRAIN_STEPS
    return StepPlan(batches, micro, steps_per_epoch, math.ceil(total / steps_per_epoch), total)


class RankEpochSampler(torch.utils.data.Sampler):
    """This process's batches of the dataset's current epoch: positions rank, rank+world, ... (wrapped
    so all ranks get the same count, as accelerate's even_batches), from ``skip`` on.

    The epoch and skip are read when iteration starts and travel in the keys, so one DataLoader (and
    its persistent worker processes) serves every epoch and a resumed one."""

    def __init__(self, dataset: TrainDataset, rank: int, world: int):
        self.dataset, self.rank, self.world, self.skip = dataset, rank, world, 0

    def _keys(self):
        n = len(self.dataset)
        per_rank = math.ceil(n / self.world)
        epoch = self.dataset.epoch
        return [(epoch, (self.rank + k * self.world) % n) for k in range(per_rank)][self.skip:]

    def __iter__(self):
        return iter(self._keys())

    def __len__(self) -> int:
        return len(self._keys())


def _first(items):
    return items[0]


def make_loader(dataset: TrainDataset, rank: int, world: int, workers: int, persistent: bool):
    """One loader for the run; set ``loader.sampler.skip`` and ``dataset.set_epoch`` before each epoch."""
    return torch.utils.data.DataLoader(
        dataset, batch_size=1, sampler=RankEpochSampler(dataset, rank, world), collate_fn=_first,
        num_workers=workers, persistent_workers=persistent and workers > 0,
    )


def preflight_text(args, world: int) -> str:
    """The dataset report printed before training (the same one tools/check_dataset.py prints)."""
    report = run_preflight(
        data_options(args), max_train_epochs=args.max_train_epochs, max_train_steps=args.max_train_steps,
        gradient_accumulation_steps=args.gradient_accumulation_steps, num_processes=world,
    )
    return report.to_text()


def build_dataset(args, seed: int) -> TrainDataset:
    opts = data_options(args)
    datasets = prepare_datasets(opts)
    return TrainDataset(datasets, seed=seed, stop_on_bad_image=args.stop_on_bad_image)


def _te_encoder(model, max_token_length):
    """captions -> {"context", "pooled"} with the frozen text encoders (for the SDXL cache)."""
    base = model.base

    @torch.no_grad()
    def run(captions):
        ids = [tokenize(tok, captions, max_token_length) for tok in base.tokenizers]
        cond = encode(base.text_encoders, ids, base.family)
        out = {"context": cond.context.float().cpu()}
        if cond.pooled is not None:
            out["pooled"] = cond.pooled.float().cpu()
        return out

    return run


def _park_on_cpu(model, modules) -> None:
    """Free GPU memory of frozen parts only the caches needed; sampling brings them back for a moment."""
    if model.device.type == "cuda":
        for m in modules:
            m.to("cpu")
        torch.cuda.empty_cache()


def attach_caches(args, dataset: TrainDataset, model, rank: int, world: int, barrier, progress: bool) -> None:
    """Latent and text-encoder caches as the options ask; images that fail to encode are dropped."""
    base = model.base
    if args.cache_latents or args.cache_latents_to_disk:
        blockers = latent_caching_blockers(dataset.datasets)
        if blockers:
            logger.warning("latents are not cached: color_aug/random_crop change the pixels every step in %s", ", ".join(blockers))
        else:
            key = {"model": base.content_hash, "vae": os.path.basename(args.vae) if args.vae else "", "vae_dtype": str(model.vae_dtype)}
            encoder = make_vae_encoder(base.vae, model.device, model.vae_dtype, sample=True, seed=args.seed)
            cache = LatentCache(
                encoder, key, to_disk=args.cache_latents_to_disk, arch="sdxl" if base.is_sdxl else "sd",
                vae_batch_size=args.vae_batch_size, stop_on_bad_image=args.stop_on_bad_image, progress=progress,
            )
            records = dataset.records()
            stats = cache.cache(records, rank=rank, world_size=world)
            barrier()
            if args.cache_latents_to_disk and world > 1:
                cache.cache(records)  # reuse the other ranks' files (and check them)
            if cache.failed:
                dataset.exclude(cache.failed)
            dataset.latent_cache = cache
            logger.info("latents: %d encoded, %d reused from disk", stats.encoded, stats.reused)
            _park_on_cpu(model, [base.vae])  # kohya's habit: the VAE is not needed on the GPU again
    if getattr(args, "cache_text_encoder_outputs", False):
        if model.train_text_encoder:
            raise DatasetError("--cache_text_encoder_outputs needs --network_train_unet_only (a trained text encoder changes its outputs)")
        key = {"model": base.content_hash, "dtype": str(model.weight_dtype), "max_token_length": args.max_token_length}
        cache = TextEncoderOutputCache(
            _te_encoder(model, args.max_token_length), key, to_disk=args.cache_text_encoder_outputs_to_disk, batch_size=8, progress=progress
        )
        records = dataset.records()
        cache.cache(records, rank=rank, world_size=world)
        barrier()
        if args.cache_text_encoder_outputs_to_disk and world > 1:
            cache.cache(records)
        dataset.text_cache = cache
        _park_on_cpu(model, base.text_encoders)
