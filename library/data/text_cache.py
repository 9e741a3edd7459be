"""Text-encoder output cache (SDXL's two encoders), in memory or on disk, keyed like the latent cache.

Why: with a frozen text encoder and fixed captions, SDXL's two text encoders can be run once per
caption and unloaded, saving several GB of VRAM. Only valid when every step sees the same caption
(``captions.captions_are_static``: no shuffle, dropout or wildcards); ``cacheable`` says so.

The ``encode`` callable maps a list of captions to a dict of tensors with a leading batch dimension
(e.g. ``{"hidden_states1": [B, 77, 768], "hidden_states2": [B, 77, 1280], "pool2": [B, 1280]}``);
``get(record)`` returns that dict for one record without the batch dimension. On disk an entry is
``<image stem>_te_outputs.npz`` (kohya's name) holding those arrays plus ``lorasmith_key`` (the caller's
``cache_key`` + the caption): another model, dtype or caption rebuilds it.
"""

from __future__ import annotations

import logging
import random
from typing import Callable, Dict, List, Mapping, Sequence

import numpy as np
import torch
from tqdm import tqdm

from .cache import FORMAT_VERSION, KEY_FIELD, CacheStats, key_json, read_entry, records_to_encode, write_npz_atomic
from .captions import captions_are_static, process_caption
from .errors import DatasetError
from .records import ImageRecord

logger = logging.getLogger("lorasmith.data")
TE_SUFFIX = "_te_outputs.npz"


def cacheable(records: Sequence[ImageRecord]) -> List[str]:
    """Names of subsets whose captions change per step (empty list: caching is allowed)."""
    return sorted({r.subset.name for r in records if not captions_are_static(r.subset)})


def static_caption(rec: ImageRecord) -> str:
    """The caption every step sees; process_caption draws no random numbers for static subsets."""
    return process_caption(rec.caption, rec.subset, random.Random(0), epoch=1)


class TextEncoderOutputCache:
    """Text-encoder outputs per record; ``get(record)`` -> dict of tensors."""

    def __init__(
        self,
        encode: Callable[[List[str]], Dict[str, torch.Tensor]],
        cache_key: Mapping,
        *,
        to_disk: bool = False,
        batch_size: int = 8,
        progress: bool = True,
    ):
        self.encode, self.cache_key, self.to_disk = encode, dict(cache_key), to_disk
        key_json(self.cache_key)
        self.batch_size, self.progress = max(1, batch_size), progress
        self.memory: Dict[str, Dict[str, torch.Tensor]] = {}

    def disk_path(self, rec: ImageRecord) -> str:
        return rec.cache_stem + TE_SUFFIX

    def entry_key(self, rec: ImageRecord) -> dict:
        return {**self.cache_key, "format": FORMAT_VERSION, "kind": "text_encoder_outputs", "caption": static_caption(rec)}

    def cache(self, records: Sequence[ImageRecord], *, rank: int = 0, world_size: int = 1) -> CacheStats:
        blockers = cacheable(records)
        if blockers:
            raise DatasetError(
                f"text-encoder outputs cannot be cached: captions change every step in {', '.join(blockers)} "
                "(shuffle_caption, caption dropout or wildcards); turn those off or drop cache_text_encoder_outputs"
            )
        todo, stats = records_to_encode(self, records, lambda r: r.key, rank, world_size)
        bar = tqdm(total=len(todo), desc="caching text encoder outputs", unit="caption", disable=not self.progress or not todo)
        for start in range(0, len(todo), self.batch_size):
            chunk = todo[start : start + self.batch_size]
            with torch.no_grad():
                out = self.encode([static_caption(r) for r in chunk])
            for i, rec in enumerate(chunk):
                entry = {k: v[i].detach().float().cpu().clone() for k, v in out.items()}
                if self.to_disk:
                    arrays = {k: v.numpy() for k, v in entry.items()}
                    arrays[KEY_FIELD] = np.array(key_json(self.entry_key(rec)))
                    write_npz_atomic(self.disk_path(rec), arrays)
                else:
                    self.memory[rec.key] = entry
                stats.encoded += 1
            bar.update(len(chunk))
        bar.close()
        return stats

    def get(self, rec: ImageRecord) -> Dict[str, torch.Tensor]:
        if not self.to_disk:
            if rec.key not in self.memory:
                raise DatasetError(f"no cached text-encoder outputs for {rec.display_name}; TextEncoderOutputCache.cache() must run first")
            return self.memory[rec.key]
        path = self.disk_path(rec)
        status, arrays = read_entry(path, self.entry_key(rec))
        if status != "ok":
            raise DatasetError(f"text-encoder cache {path} is {status}; run caching again")
        return {k: torch.from_numpy(v) for k, v in arrays.items() if k != KEY_FIELD}
