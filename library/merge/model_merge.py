"""Checkpoint merging (tools/merge_models.py): weighted sum and add difference, key by key.

Only one tensor per input is in memory at a time: inputs are read lazily (safetensors) and
the output is streamed (stream_write), so merging two SDXL files needs about one tensor's
worth of RAM, not three models'. The output keeps the first model's key layout, dtypes
(unless ``save_dtype`` is given) and metadata, so it loads wherever the first model does.

* weighted sum: ``sum_i r_i * m_i`` (``--ratio r`` with two models is ``(1-r)*A + r*B``);
  a key missing from a model takes the first model's value for that model's share (kohya).
* add difference: ``A + (B - C) * r``; keys missing from B or C keep A's value.
Arithmetic is float32 per tensor; integer tensors are copied from the first model.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from library.errors import UserError
from library.merge.stream_write import write_streaming
from library.output_paths import check_tool_output
from library.models.checkpoint_file import open_checkpoint
from library.models.detect import detect_family, reject_non_checkpoints
from library.models.layout import UNET_PREFIX
from library.models.single_file import declared_configs
from library.vocabulary import is_network_key

log = logging.getLogger(__name__)

MODES = ("weighted_sum", "add_difference")
_HF_TE_PREFIXES = ("cond_stage_model.transformer.", "conditioner.embedders.0.transformer.")


class MergeError(UserError):
    """Inputs that cannot be merged together, with what to do."""


@dataclass
class Source:
    """One input checkpoint, opened lazily."""

    path: Path
    reader: object
    family: str
    keys: dict[str, str]  # normalised key -> key in the file

    def get(self, norm_key: str) -> torch.Tensor:
        return self.reader.get(self.keys[norm_key])

    def shape(self, norm_key: str) -> tuple[int, ...]:
        return tuple(self.reader.shape(self.keys[norm_key]))


def normalise_key(key: str) -> str:
    """One name per tensor across layouts: old SD1 files lack CLIP's ``text_model.`` level."""
    for prefix in _HF_TE_PREFIXES:
        if key.startswith(prefix):
            rest = key[len(prefix):]
            if not rest.startswith("text_model.") and rest.split(".", 1)[0] in ("embeddings", "encoder", "final_layer_norm"):
                return prefix + "text_model." + rest
    return key


def open_source(path: str | os.PathLike) -> Source:
    """Open a single-file checkpoint and tell its family; LoRAs, folders and junk get clear errors."""
    p = Path(path)
    if p.is_dir():
        raise MergeError(f"{p}: a folder; merge_models merges single-file checkpoints (.safetensors/.ckpt), pass those")
    reader = open_checkpoint(p)
    keys = reader.keys()
    if "ss_network_module" in reader.metadata or any(is_network_key(k) for k in keys):
        raise MergeError(
            f"{p}: a LoRA file, not a checkpoint; to bake LoRAs into a checkpoint use tools/merge_lora.py --sd_model BASE --models LORA"
        )
    reject_non_checkpoints(p, keys, reader.metadata)
    declared = declared_configs(p, reader.metadata)
    family = detect_family(p, keys, reader.shape, declared=declared["family"] if declared else None)
    return Source(p, reader, family, {normalise_key(k): k for k in keys})


def check_same_family(sources: list[Source]) -> None:
    first = sources[0]
    for other in sources[1:]:
        if other.family != first.family:
            raise MergeError(
                f"cannot merge {first.path} ({first.family}) with {other.path} ({other.family}): "
                "checkpoints of different families have different shapes; pick models of the same family"
            )


def merge_ratios(mode: str, n_models: int, ratio: float | None, ratios: list[float] | None) -> list[float]:
    """Per-model multipliers for weighted sum, or ``[r]`` for add difference; checks the counts."""
    if mode not in MODES:
        raise MergeError(f"--mode {mode}: unknown (known: {', '.join(MODES)})")
    if mode == "add_difference":
        if n_models != 3:
            raise MergeError(f"--mode add_difference needs exactly 3 --models (A B C for A + (B - C) * ratio), got {n_models}")
        if ratios:
            raise MergeError("--mode add_difference takes one --ratio, not --ratios")
        return [1.0 if ratio is None else float(ratio)]
    if n_models < 2:
        raise MergeError(f"--models: give at least 2 checkpoints to merge, got {n_models}")
    if ratio is not None and ratios:
        raise MergeError("give either --ratio (two models: (1-r)*A + r*B) or --ratios (one per model), not both")
    if ratio is not None:
        if n_models != 2:
            raise MergeError(f"--ratio works with exactly 2 --models ((1-r)*A + r*B); for {n_models} models use --ratios")
        return [1.0 - float(ratio), float(ratio)]
    if ratios:
        if len(ratios) != n_models:
            raise MergeError(f"--ratios has {len(ratios)} values for {n_models} --models; give one ratio per model")
        return [float(r) for r in ratios]
    return [1.0 / n_models] * n_models


def _fit(t: torch.Tensor, shape: tuple[int, ...], key: str, a: Source, b: Source) -> torch.Tensor:
    """``t`` in ``shape``: as is, or a 1x1-conv <-> linear reshape of the same matrix."""
    if tuple(t.shape) == shape:
        return t
    if t.numel() == torch.Size(shape).numel() and tuple(t.shape)[:2] == shape[:2]:
        return t.reshape(shape)
    raise MergeError(
        f"tensor '{key}' is {list(shape)} in {a.path} but {list(t.shape)} in {b.path}; "
        "these are not the same model architecture (a different variant or a broken file), they cannot be merged"
    )


class Merger:
    """The per-key arithmetic over open sources (kept apart from I/O so it is easy to test)."""

    def __init__(self, sources: list[Source], mode: str, ratios: list[float], unet_only: bool = False):
        self.sources, self.mode, self.ratios, self.unet_only = sources, mode, ratios, unet_only
        self.partial: list[str] = []  # keys missing from some model

    def merged(self, key: str) -> torch.Tensor:
        a = self.sources[0]
        base = a.get(key)
        if not base.is_floating_point() or (self.unet_only and not key.startswith(UNET_PREFIX)):
            return base
        shape = tuple(base.shape)
        out = base.float()
        if self.mode == "add_difference":
            b, c = self.sources[1], self.sources[2]
            if key not in b.keys or key not in c.keys:
                self.partial.append(key)
                return base
            diff = _fit(b.get(key), shape, key, a, b).float() - _fit(c.get(key), shape, key, a, c).float()
            return out + diff * self.ratios[0]
        out = out * self.ratios[0]
        for src, r in zip(self.sources[1:], self.ratios[1:]):
            if key in src.keys:
                out = out + _fit(src.get(key), shape, key, a, src).float() * r
            else:  # kohya: a model without the key lends its share to the first model's value
                self.partial.append(key)
                out = out + base.float() * r
        return out


def output_metadata(sources: list[Source], mode: str, ratios: list[float], unet_only: bool) -> dict[str, str]:
    """The first model's metadata (our configs included, hashes dropped) plus the merge recipe."""
    meta = {k: v for k, v in sources[0].reader.metadata.items() if "hash" not in k.lower()}
    recipe = {"mode": mode, "models": [s.path.name for s in sources], "ratios": ratios, "unet_only": unet_only}
    meta["lorasmith.merge"] = json.dumps(recipe)
    meta["modelspec.merged_from"] = ", ".join(s.path.stem for s in sources)
    return meta


def merge_models(
    paths: list[str | os.PathLike],
    save_to: str | os.PathLike,
    *,
    mode: str = "weighted_sum",
    ratio: float | None = None,
    ratios: list[float] | None = None,
    save_dtype: torch.dtype | None = None,
    unet_only: bool = False,
) -> dict:
    """Merge checkpoints of one family into ``save_to`` (.safetensors, atomic); returns a summary."""
    out = Path(save_to)
    if out.suffix.lower() != ".safetensors":
        raise MergeError(f"--save_to {out}: merged models are written as .safetensors; use a name ending in .safetensors")
    if not out.parent.is_dir():
        raise MergeError(f"--save_to {out}: the folder {out.parent} does not exist; create it or choose another path")
    multipliers = merge_ratios(mode, len(paths), ratio, ratios)
    check_tool_output(str(out), paths, None)  # the one owner: paths, symlinks, hard links
    sources = [open_source(p) for p in paths]
    check_same_family(sources)
    merger = Merger(sources, mode, multipliers, unet_only)
    a = sources[0]
    entries = []
    for key, file_key in a.keys.items():
        dtype = a.reader.dtype(file_key)
        if save_dtype is not None and dtype.is_floating_point:
            dtype = save_dtype
        entries.append((file_key, a.shape(key), dtype))
    norm_of = {file_key: key for key, file_key in a.keys.items()}
    dtypes = {name: dtype for name, _, dtype in entries}

    def produce(file_key: str) -> torch.Tensor:
        return merger.merged(norm_of[file_key]).to(dtypes[file_key])

    write_streaming(out, entries, produce, output_metadata(sources, mode, multipliers, unet_only))
    skipped = sorted({k for s in sources[1:] for k in s.keys if k not in a.keys})
    partial = sorted(set(merger.partial))
    if skipped:
        log.warning("%d tensors of the other models are not in %s and were left out (e.g. %s)", len(skipped), a.path, skipped[0])
    if partial:
        log.warning("%d tensors are missing from some models and used the first model's value there (e.g. %s)", len(partial), partial[0])
    return {"family": a.family, "ratios": multipliers, "tensors": len(entries), "skipped": skipped, "partial": partial}
