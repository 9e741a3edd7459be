"""Where the frozen parts live once the caches are filled: kept, parked on the CPU, or freed.

Why a module of its own: ``--cache_text_encoder_outputs``, ``--cache_latents``, ``--lowram`` and
``--highvram`` all decide the same thing — which of VAE and text encoders stay resident, and where —
and the answer must be the same on every device (docs/options.md). One place decides it:

* text encoders, when their outputs are cached (so they are not trained): freed on every device.
  Sample prompts, if any, are encoded once before that with the pipeline's own prompt encoder, so
  sampling needs no text encoder and the images are the ones the encoders would give.
* VAE, when latents are cached: on a GPU parked in CPU memory (sampling brings it back for a
  moment) — unless ``--highvram`` (plenty of VRAM: keep it on the GPU) or ``--lowram`` (little RAM:
  keep it on the GPU too, or free it when no samples need it).
* ``--lowram`` also loads the checkpoint tensor by tensor straight onto the GPU, so the CPU never
  holds the whole model.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import logging

import torch

logger = logging.getLogger("lorasmith.train")


def load_device(args, device: torch.device) -> torch.device:
    """Where the checkpoint's tensors are read to: the GPU itself with ``--lowram``, else the CPU."""
    return device if args.lowram and device.type == "cuda" else torch.device("cpu")


def device_notices(args, device: torch.device) -> list[str]:
    """What --highvram / --lowram cannot do on this device (an option never does nothing silently)."""
    if device.type == "cuda":
        return []
    notes = []
    if args.highvram:
        notes.append("--highvram keeps the VAE on the GPU after latent caching; training on the CPU, it changes nothing")
    if args.lowram:
        notes.append("--lowram: on the CPU the checkpoint is read as always; only freeing the VAE after latent "
                     "caching (when no samples are asked for) applies")
    return notes


def is_freed(module: torch.nn.Module) -> bool:
    p = next(module.parameters(), None)
    return p is not None and p.device.type == "meta"


def free(modules) -> None:
    """Drop the weights of ``modules`` (they become meta tensors) and give the memory back to the OS."""
    for m in modules:
        m.to("meta")
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    _trim_heap()


def _trim_heap() -> None:
    """glibc keeps freed heap pages resident until asked; ask (Linux only, harmless elsewhere)."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _park(model, modules) -> None:
    if model.device.type == "cuda":
        for m in modules:
            m.to("cpu")
        torch.cuda.empty_cache()


def after_latent_cache(args, model) -> None:
    """Every latent is cached: the VAE is needed again only for samples."""
    vae = model.base.vae
    if args.lowram and not args.sample_prompts:
        free([vae])
        logger.info("--lowram: the VAE is freed (latents are cached and no samples are asked for)")
    elif model.device.type == "cuda" and not (args.highvram or args.lowram):
        _park(model, [vae])  # kohya's habit: the VAE is not needed on the GPU again


def release_text_encoders(args, model, main_process: bool) -> None:
    """Text-encoder outputs are cached: encode the sample prompts (main process), then free the encoders."""
    base = model.base
    if main_process and args.sample_prompts:
        from library.inference.prompts import read_prompt_file
        from library.train.sampling import encode_sample_prompts

        prompts = read_prompt_file(args.sample_prompts)
        autocast = (torch.autocast(model.device.type, dtype=model.weight_dtype)
                    if model.weight_dtype != torch.float32 else contextlib.nullcontext())
        with torch.no_grad(), autocast:
            model.sample_conditioning = encode_sample_prompts(
                base, prompts, clip_skip=None if base.is_sdxl else args.clip_skip)
    before = sum(p.numel() * p.element_size() for te in base.text_encoders for p in te.parameters())
    free(base.text_encoders)
    logger.info("text encoders freed (%.0f MiB): their outputs are cached", before / 2**20)
