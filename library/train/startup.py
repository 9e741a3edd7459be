"""The way to the first training step: load the model and cache latents, overlapped.

Why a module: time to the first step is what a user waits through on every run, and most of it is
latent caching (a full SD VAE encodes ~1 image/s at 256 px on a CPU) and reading the checkpoint. The
loader finishes the VAE first (library.models ``on_part``), so latent caching starts on a thread while
the UNet and text encoders are read and the LoRA is built; the main thread joins it before training.
The base file's sha256 is not on this path at all: it is hashed in the background at low priority and
awaited when the first LoRA file is written (library/train/metadata.py).

The overlap is used when it cannot change a result: one process (several processes cache their shares
between barriers, as before), latents cached (``--cache_latents``/``--cache_latents_to_disk``). The
cached latents are the same either way (the VAE samples with its own seeded generator; the LoRA's
initialisation on the main thread draws from the global generator, which caching never touches).
"""

from __future__ import annotations

import logging
import threading

import torch

from library.models.hashes import content_key
from library.train.setup_data import attach_caches, latent_cache
from library.train.setup_model import load_for_training, place_vae, vae_placement

logger = logging.getLogger("lorasmith.train")

OVERLAP = True  # bench/startup.py turns it off for its baseline (load, then cache)


class _Cancelled(Exception):
    """Raised inside the caching thread's encoder when the load failed: stop after the current image."""


class _EarlyLatents:
    """Latent caching on a thread, started by the loader as soon as the VAE is complete."""

    def __init__(self, args, datasets: list, device: torch.device, progress: bool):
        self.args, self.datasets, self.device, self.progress = args, datasets, device, progress
        self.cancelled = threading.Event()
        self.thread: threading.Thread | None = None
        self.cache = self.stats = self.error = None
        self.content_hash = ""

    def start(self, vae, family: str) -> None:
        place_vae(self.args, vae, self.device)  # where load_for_training would put it; it leaves it there
        device, dtype = vae_placement(self.args, self.device)
        self.content_hash = content_key(self.args.pretrained_model_name_or_path)
        cache = latent_cache(self.args, self.datasets, vae, device, dtype, self.content_hash, family == "sdxl", self.progress)
        if cache is None:
            return
        encode = cache.encode

        def encode_unless_cancelled(pixels):
            if self.cancelled.is_set():
                raise _Cancelled
            return encode(pixels)

        cache.encode = encode_unless_cancelled
        self.cache = cache
        self.thread = threading.Thread(target=self._run, name="latent-cache", daemon=True)
        self.thread.start()
        logger.info("caching latents while the UNet and text encoders load")

    def _run(self) -> None:
        try:
            self.stats = self.cache.cache([r for d in self.datasets for r in d.records()])
        except _Cancelled:
            pass
        except BaseException as e:  # noqa: BLE001 - re-raised on the main thread by result()
            self.error = e

    def cancel(self) -> None:
        self.cancelled.set()
        if self.thread is not None:
            self.thread.join()

    def result(self, model):
        """(cache, stats) once caching is done; None when it never started (attach_caches caches then)."""
        if self.thread is None:
            return None
        self.thread.join()
        if self.error is not None:
            raise self.error
        if self.content_hash != model.base.content_hash:  # cannot happen; cache again under the model's key
            return None
        return self.cache, self.stats


def load_and_cache(args, script: str, acc, dataset, validation=None):
    """:func:`load_for_training` then :func:`attach_caches`, with latent caching overlapping the load
    where it can (see the module docstring). Returns the TrainModel."""
    rank, world = acc.process_index, acc.num_processes
    progress = acc.is_local_main_process
    early = None
    if OVERLAP and world == 1 and (args.cache_latents or args.cache_latents_to_disk):
        early = _EarlyLatents(args, [d for d in (dataset, validation) if d is not None], torch.device(acc.device), progress)
    try:
        model = load_for_training(args, script, acc.device, vae_ready=early.start if early is not None else None)
        latents = early.result(model) if early is not None else None
    except BaseException:
        if early is not None:
            early.cancel()
        raise
    attach_caches(args, dataset, model, rank, world, acc.wait_for_everyone, progress=progress, validation=validation,
                  latents=latents)
    return model
