"""Latent cache: VAE latents per image, in memory or on disk next to the image, keyed by model and options.

Why: encoding images with the VAE every step is the slowest part of a LoRA run on small GPUs, so
latents are computed once. kohya's caches are not keyed by model or dtype, so switching the base
model silently reuses stale latents (NaN losses, ruined LoRAs); ours record their full key.

Disk format (kohya's file names and arrays, so kohya tools can read them):
``<image stem>_<WWWW>x<HHHH>_sd.npz`` (``_sdxl.npz`` for SDXL; W x H = original image size, zero-padded
like kohya) with float32 ``latents`` [C, h, w], ``latents_flipped`` (with flip_aug), ``original_size``
[w, h], ``crop_ltrb``, plus ``lorasmith_key``: a JSON string of the caller's ``cache_key`` (model hash,
VAE dtype, ...) and the entry's own facts (bucket, resized size, crop, flip, image size+mtime).
An entry whose key differs in anything is rebuilt, never reused; an unreadable file is rebuilt with a
warning. Files are written to a temporary name and renamed into place (library.atomic), so a crash never
leaves a half-written cache under the real name.

Encoding: images are decoded and resized on worker threads while the VAE encodes batches of
``vae_batch_size`` images of one bucket; a tqdm bar shows progress. With several processes
(``rank``/``world_size``) each process encodes its share of the disk cache (every world_size-th image
in bucket order); in-memory caches are filled whole by every process, since each needs all latents.
The ``encode`` callable maps pixels [B, 3, H, W] in [-1, 1] (float32, CPU) to latents [B, C, H/8, W/8];
scaling by the VAE factor (0.18215 SD, 0.13025 SDXL) is left to the training loop, as kohya stores
unscaled latents. ``make_vae_encoder`` builds one from a diffusers ``AutoencoderKL``.
"""

from __future__ import annotations

import json
import logging
import os
import zipfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch
from tqdm import tqdm

from library.atomic import atomic_write

from .buckets import crop_offsets
from .errors import DatasetError
from .images import prepare_pixels, resize_key, to_tensor
from .masks import mask_fingerprint, prepare_mask
from .records import ImageRecord

logger = logging.getLogger("lorasmith.data")
FORMAT_VERSION = 1
KEY_FIELD = "lorasmith_key"


# ---- generic keyed .npz entries -------------------------------------------------------------


def key_json(key: Mapping) -> str:
    return json.dumps(key, sort_keys=True, default=str)


def write_npz_atomic(path: str, arrays: Mapping[str, np.ndarray]) -> None:
    """Write ``arrays`` to ``path`` through the atomic writer (unique temp: ranks may share a folder)."""
    with atomic_write(path, "wb", unique=True) as f:
        np.savez(f, **arrays)


def read_entry(path: str, expected_key: Mapping) -> Tuple[str, Optional[Dict[str, np.ndarray]]]:
    """("ok", arrays) | ("missing"|"stale"|"corrupt", None) for one cache file."""
    if not os.path.exists(path):
        return "missing", None
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
        stored = str(arrays[KEY_FIELD]) if KEY_FIELD in arrays else None
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:
        logger.warning(f"cache file {path} is unreadable ({type(e).__name__}); rebuilding it")
        return "corrupt", None
    if stored != key_json(expected_key):
        return "stale", None
    return "ok", arrays


def stale_fields(path: str, expected_key: Mapping) -> List[str]:
    """Which key fields differ in an existing entry (for messages and tests)."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            stored = json.loads(str(npz[KEY_FIELD]))
    except Exception:
        return ["<unreadable>"]
    return sorted(k for k in set(stored) | set(expected_key) if stored.get(k) != json.loads(key_json(expected_key)).get(k))


# ---- latents ----------------------------------------------------------------------------------


def latent_caching_blockers(datasets) -> List[str]:
    """Subsets (of prepared datasets) whose augmentation needs fresh pixels every step.

    color_aug and random_crop change the pixels each step, so latents cannot be cached; kohya then
    turns caching off for the whole run, and so do we (``latent_cache_for`` says which subsets).
    """
    return sorted({s.subset.name for ds in datasets for s in ds.subsets if s.subset.color_aug or s.subset.random_crop})


def latent_cache_for(options, datasets, encode, cache_key: Mapping, arch: str = "sd", num_workers: int = 2, progress: bool = True):
    """A ``LatentCache`` as ``options`` (DataOptions) ask, or None with a notice when augmentation forbids it."""
    if not (options.cache_latents or options.cache_latents_to_disk):
        return None
    blockers = latent_caching_blockers(datasets)
    if blockers:
        logger.warning(
            f"latent caching is off: color_aug/random_crop need fresh pixels every step in {', '.join(blockers)}; "
            "images are decoded and encoded each step instead"
        )
        return None
    return LatentCache(
        encode, cache_key, to_disk=options.cache_latents_to_disk, arch=arch, vae_batch_size=options.vae_batch_size,
        num_workers=num_workers, stop_on_bad_image=options.stop_on_bad_image, progress=progress,
        masks=bool(getattr(options, "masked_loss", False)),
    )


@dataclass
class CacheStats:
    encoded: int = 0
    reused: int = 0
    stale: int = 0
    corrupt: int = 0
    failed: int = 0


def records_to_encode(cache, records: Sequence[ImageRecord], sort_key, rank: int = 0, world_size: int = 1):
    """(records this process must encode, stats) for a latent or text-encoder cache.

    Each record once, in ``sort_key`` order; on disk each process takes every ``world_size``-th one
    and an entry is reused only if its recorded key matches ``cache.entry_key`` (else it is stale or
    corrupt and rebuilt); in memory whatever is not there yet.
    """
    stats = CacheStats()
    ordered = sorted({r.key: r for r in records}.values(), key=sort_key)
    if cache.to_disk and world_size > 1:
        ordered = ordered[rank::world_size]
    todo = []
    for rec in ordered:
        if not cache.to_disk:
            if rec.key not in cache.memory:
                todo.append(rec)
            continue
        status, _ = read_entry(cache.disk_path(rec), cache.entry_key(rec))
        if status == "ok":
            stats.reused += 1
        else:
            stats.stale += status == "stale"
            stats.corrupt += status == "corrupt"
            todo.append(rec)
    return todo, stats


def make_vae_encoder(vae, device=None, dtype=None, sample: bool = True, seed: Optional[int] = None) -> Callable[[torch.Tensor], torch.Tensor]:
    """encode(pixels [-1, 1]) -> unscaled latents (float32, CPU) with a diffusers AutoencoderKL."""
    device = torch.device(device) if device is not None else next(vae.parameters()).device
    dtype = dtype or next(vae.parameters()).dtype
    generator = torch.Generator(device).manual_seed(seed) if seed is not None else None

    @torch.no_grad()
    def encode(pixels: torch.Tensor) -> torch.Tensor:
        dist = vae.encode(pixels.to(device, dtype)).latent_dist
        z = dist.sample(generator=generator) if sample else dist.mean
        return z.float().cpu()

    return encode


class LatentCache:
    """Latents for records, computed once; ``get(record, flipped)`` returns [C, h, w] float32."""

    def __init__(
        self,
        encode: Callable[[torch.Tensor], torch.Tensor],
        cache_key: Mapping,
        *,
        to_disk: bool = False,
        arch: str = "sd",
        vae_batch_size: int = 1,
        num_workers: int = 2,
        stop_on_bad_image: bool = False,
        progress: bool = True,
        masks: bool = False,
    ):
        if arch not in ("sd", "sdxl"):
            raise ValueError("arch must be 'sd' or 'sdxl'")
        self.encode, self.cache_key, self.to_disk, self.arch = encode, dict(cache_key), to_disk, arch
        key_json(self.cache_key)  # fail early if not JSON-serialisable
        self.vae_batch_size, self.num_workers = max(1, vae_batch_size), max(1, num_workers)
        self.stop_on_bad_image, self.progress = stop_on_bad_image, progress
        self.memory: Dict[str, Tuple[torch.Tensor, Optional[torch.Tensor]]] = {}
        # masked_loss: each entry also holds its loss mask [H, W] at bucket size (unflipped), kohya's "alpha_mask"
        self.masks = masks
        self.mask_memory: Dict[str, torch.Tensor] = {}
        self.failed: List[str] = []

    def disk_path(self, rec: ImageRecord) -> str:
        w, h = rec.size
        return f"{rec.cache_stem}_{w:04d}x{h:04d}_{self.arch}.npz"

    def entry_key(self, rec: ImageRecord) -> dict:
        left, top = crop_offsets(rec.resized_size, rec.bucket_reso)
        return {
            **self.cache_key,
            "format": FORMAT_VERSION,
            "kind": f"latents_{self.arch}",
            "bucket": list(rec.bucket_reso),
            "resized": list(rec.resized_size),
            "crop": [left, top],
            "flip": bool(rec.subset.flip_aug),
            "resize": resize_key(rec.subset.resize_interpolation),
            "image": rec.fingerprint(),
            **({"mask": mask_fingerprint(rec)} if self.masks else {}),
        }

    def cache(self, records: Sequence[ImageRecord], *, rank: int = 0, world_size: int = 1) -> CacheStats:
        """Encode whatever is missing, stale or corrupt among ``records`` (this process's share on disk)."""
        todo, stats = records_to_encode(self, records, lambda r: (r.bucket_reso, r.key), rank, world_size)
        if stats.stale:
            logger.info(f"{stats.stale} latent cache files were made with other settings (model, dtype, bucket or image changed); rebuilding them")
        self._encode_all(todo, stats)
        return stats

    def _chunks(self, todo: List[ImageRecord]) -> List[List[ImageRecord]]:
        chunks: List[List[ImageRecord]] = []
        for rec in todo:
            if chunks and chunks[-1][0].bucket_reso == rec.bucket_reso and len(chunks[-1]) < self.vae_batch_size:
                chunks[-1].append(rec)
            else:
                chunks.append([rec])
        return chunks

    def _load(self, rec: ImageRecord):
        try:
            px = prepare_pixels(rec.source(), rec.bucket_reso, name=rec.display_name, interpolation=rec.subset.resize_interpolation)
            if self.masks:  # travels with the pixels to _write / mask_memory
                px.mask = prepare_mask(rec, px.resized_size, px.crop_left_top, rec.bucket_reso)
            return px, None
        except (DatasetError, OSError) as e:
            return None, e

    def _encode_all(self, todo: List[ImageRecord], stats: CacheStats) -> None:
        if not todo:
            return
        chunks = self._chunks(todo)
        bar = tqdm(total=len(todo), desc="caching latents", unit="img", disable=not self.progress)
        with ThreadPoolExecutor(self.num_workers) as pool:
            ahead = 2
            pending = [[pool.submit(self._load, r) for r in c] for c in chunks[:ahead]]
            for i, chunk in enumerate(chunks):
                if i + ahead < len(chunks):
                    pending.append([pool.submit(self._load, r) for r in chunks[i + ahead]])
                loaded = [f.result() for f in pending[i]]
                pending[i] = None
                self._encode_chunk(chunk, loaded, stats)
                bar.update(len(chunk))
        bar.close()

    def _encode_chunk(self, chunk, loaded, stats: CacheStats) -> None:
        good = []
        for rec, (px, err) in zip(chunk, loaded):
            if err is not None:
                if self.stop_on_bad_image:
                    raise DatasetError(f"{err} (stop_on_bad_image is set)")
                logger.warning(f"skipped while caching latents: {err}")
                self.failed.append(rec.key)
                stats.failed += 1
            else:
                good.append((rec, px))
        if not good:
            return
        tensors = [to_tensor(px.array) for _, px in good]
        flips = [i for i, (rec, _) in enumerate(good) if rec.subset.flip_aug]
        batch = torch.stack(tensors + [torch.flip(tensors[i], dims=[2]) for i in flips])
        with torch.no_grad():
            latents = self.encode(batch).float().cpu()
        n = len(good)
        flipped = {i: latents[n + j] for j, i in enumerate(flips)}
        for i, (rec, px) in enumerate(good):
            lat, lat_f = latents[i].clone(), (flipped[i].clone() if i in flipped else None)
            if self.to_disk:
                self._write(rec, px, lat, lat_f)
            else:
                self.memory[rec.key] = (lat, lat_f)
                if self.masks:
                    self.mask_memory[rec.key] = torch.from_numpy(px.mask)
            stats.encoded += 1

    def _write(self, rec: ImageRecord, px, lat: torch.Tensor, lat_f: Optional[torch.Tensor]) -> None:
        left, top = px.crop_left_top
        arrays = {
            "latents": lat.numpy(),
            "original_size": np.array(rec.size),
            "crop_ltrb": np.array([left, top, left + rec.bucket_reso[0], top + rec.bucket_reso[1]]),
            KEY_FIELD: np.array(key_json(self.entry_key(rec))),
        }
        if lat_f is not None:
            arrays["latents_flipped"] = lat_f.numpy()
        if self.masks:
            arrays["alpha_mask"] = px.mask
        write_npz_atomic(self.disk_path(rec), arrays)

    def get(self, rec: ImageRecord, flipped: bool = False) -> torch.Tensor:
        """Cached latents of ``rec`` (flipped ones with ``flipped``); DatasetError if not cached."""
        if not self.to_disk:
            if rec.key not in self.memory:
                raise DatasetError(f"no cached latents for {rec.display_name}; LatentCache.cache() must run first")
            lat, lat_f = self.memory[rec.key]
        else:
            path = self.disk_path(rec)
            status, arrays = read_entry(path, self.entry_key(rec))
            if status != "ok":
                raise DatasetError(f"latent cache {path} is {status}; run latent caching again (cache_latents_to_disk)")
            lat = torch.from_numpy(arrays["latents"])
            lat_f = torch.from_numpy(arrays["latents_flipped"]) if "latents_flipped" in arrays else None
        if flipped:
            if lat_f is None:
                raise DatasetError(f"no flipped latents cached for {rec.display_name}; enable flip_aug before caching")
            return lat_f
        return lat

    def get_mask(self, rec: ImageRecord, flipped: bool = False) -> torch.Tensor:
        """The cached loss mask [H, W] of ``rec`` (masked_loss), flipped with its latents."""
        if not self.to_disk:
            if rec.key not in self.mask_memory:
                raise DatasetError(f"no cached mask for {rec.display_name}; LatentCache(masks=True).cache() must run first")
            mask = self.mask_memory[rec.key]
        else:
            path = self.disk_path(rec)
            status, arrays = read_entry(path, self.entry_key(rec))
            if status != "ok" or "alpha_mask" not in arrays:
                raise DatasetError(f"latent cache {path} has no valid mask; run latent caching again (cache_latents_to_disk)")
            mask = torch.from_numpy(arrays["alpha_mask"])
        return torch.flip(mask, dims=[1]) if flipped else mask
