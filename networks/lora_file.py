"""Reading and writing LoRA ``.safetensors`` files: atomic writes, hashes, clear errors.

Writes go through library.atomic (``<name>.tmp`` in the same folder, renamed into place), so a
crash or full disk never leaves a half file under the final name, and NaN/inf weights are never
written at all. The ``sshs_*`` hashes are
the ones A1111's additional-networks extension shows: sha256 of the tensor data (all
bytes after the header) and the legacy 8-hex hash of 64 KiB at offset 1 MiB; like kohya,
they are computed over a file holding only the ``ss_*`` metadata, so user metadata
does not change them.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import struct
from io import BytesIO

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save, save_file

from library.atomic import atomic_path
from library.errors import UserError
from networks.lora_format import group_modules


class LoRAFileError(UserError):
    """A LoRA file that cannot be read or does not fit the model."""


class NonFiniteWeights(LoRAFileError):
    """Weights with NaN/inf that must not be saved under a final name."""


def _tensor_data_sha256(stream) -> str:
    stream.seek(0)
    header_len = struct.unpack("<Q", stream.read(8))[0]
    stream.seek(8 + header_len)
    h = hashlib.sha256()
    for chunk in iter(lambda: stream.read(1 << 20), b""):
        h.update(chunk)
    return h.hexdigest()


def _legacy_hash(stream) -> str:
    stream.seek(0x100000)
    return hashlib.sha256(stream.read(0x10000)).hexdigest()[:8]


def safetensors_hashes(tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> tuple[str, str]:
    """(sshs_model_hash, sshs_legacy_hash) as A1111's additional-networks computes them."""
    ss_only = {k: v for k, v in metadata.items() if k.startswith("ss_")}
    stream = BytesIO(save(tensors, ss_only))
    return _tensor_data_sha256(stream), _legacy_hash(stream)


def atomic_save_safetensors(tensors: dict[str, torch.Tensor], path: str, metadata: dict[str, str] | None = None) -> None:
    """Write a safetensors file through the one atomic writer (library.atomic)."""
    with atomic_path(os.fspath(path)) as tmp:
        try:
            save_file({k: v.contiguous() for k, v in tensors.items()}, tmp, metadata=metadata)
        except SafetensorError as e:  # e.g. "File too large (os error 27)": an OSError, so callers can say why
            found = re.search(r"os error (\d+)", str(e))
            if not found:
                raise
            raise OSError(int(found.group(1)), os.strerror(int(found.group(1))), os.fspath(path)) from None


def check_finite(tensors: dict[str, torch.Tensor], path: str) -> None:
    """Refuse to write NaN/inf weights under a final name: such a file breaks every image it touches."""
    bad = [k for k, v in tensors.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        raise NonFiniteWeights(f"{path}: not written: {len(bad)} tensor(s) hold NaN or inf (e.g. {bad[0]}); "
                               "lower the learning rate or check the inputs and ratios")


def save_lora_file(state_dict: dict[str, torch.Tensor], path: str, metadata: dict[str, str] | None = None, dtype=None) -> None:
    """Save a LoRA state dict with string metadata and the sshs hashes, atomically."""
    tensors = {}
    for k, v in state_dict.items():
        v = v.detach().to("cpu")
        tensors[k] = (v.to(dtype) if dtype is not None else v.clone()).contiguous()
    metadata = {k: str(v) for k, v in (metadata or {}).items()}
    if not str(path).endswith(".safetensors"):
        raise LoRAFileError(f"{path}: LoRA files are written as .safetensors; use a name ending in .safetensors")
    check_finite(tensors, path)
    metadata["sshs_model_hash"], metadata["sshs_legacy_hash"] = safetensors_hashes(tensors, metadata)
    atomic_save_safetensors(tensors, path, metadata)


def read_lora_file(path: str) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(tensors, metadata) of a LoRA file, with one-line errors for missing/damaged/wrong files."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise LoRAFileError(f"{path}: LoRA file not found; check the path")
    if not path.endswith(".safetensors"):
        raise LoRAFileError(
            f"{path}: only .safetensors LoRA files are read (pickle files can run code); "
            "convert it with tools/convert_lora.py"
        )
    try:
        with safe_open(path, framework="pt") as f:
            metadata = dict(f.metadata() or {})
        tensors = load_file(path)
    except (SafetensorError, OSError, ValueError, json.JSONDecodeError) as e:
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise LoRAFileError(f"{path}: not a readable safetensors file ({reason}); it may be truncated, re-download or re-save it") from None
    if not tensors:
        raise LoRAFileError(f"{path}: the file holds no tensors")
    return tensors, metadata


def module_dims_and_alphas(tensors: dict[str, torch.Tensor], path: str = "<weights>") -> tuple[dict[str, int], dict[str, float]]:
    """Per-module rank (from lora_down's first dim) and alpha (missing -> rank) of a kohya LoRA."""
    modules = group_modules(tensors)[0]
    dims = {name: int(slots["down"].shape[0]) for name, slots in modules.items() if slots.get("down") is not None}
    alphas = {name: float(slots["alpha"].float().item()) for name, slots in modules.items() if slots.get("alpha") is not None}
    if not dims:
        sample = ", ".join(list(tensors)[:3])
        raise LoRAFileError(
            f"{path}: no kohya LoRA keys (<name>.lora_down.weight) found (keys look like: {sample}); "
            "convert diffusers/PEFT files with tools/convert_lora.py"
        )
    for name, dim in dims.items():
        if not alphas.get(name):
            alphas[name] = float(dim)
    return dims, alphas


# What a module's tensors say about the network type that wrote them (the names ComfyUI's
# weight adapters and LyCORIS use). A plain LoRA is ``lora_down``/``lora_up`` without extras.
_KIND_BY_SUFFIX = (
    (".lora_mid.weight", "LoCon with CP/Tucker decomposition (lora_mid)"),
    (".dora_scale", "DoRA (dora_scale)"),
    (".hada_w1_a", "LoHa (hada_w1_a/hada_w2_a)"),
    (".lokr_w1", "LoKr (lokr_w1/lokr_w2)"),
    (".lokr_w1_a", "LoKr (lokr_w1/lokr_w2)"),
    (".lokr_w2", "LoKr (lokr_w1/lokr_w2)"),
    (".lokr_w2_a", "LoKr (lokr_w1/lokr_w2)"),
    (".oft_blocks", "OFT (oft_blocks)"),
    (".oft_R", "OFT (oft_R)"),
    (".on_input", "IA3 (on_input)"),
    (".a1.weight", "GLoRA (a1/a2/b1/b2)"),
    (".diff", "full weight difference (diff)"),
    (".w_norm", "norm layer weights (w_norm)"),
)
PLAIN_LORA = "LoRA"


def file_kinds(tensors) -> dict[str, str]:
    """{kind: an example key} for every network type found in a file's keys (``LoRA`` for plain lora_down/up)."""
    kinds: dict[str, str] = {}
    for key in tensors:
        for suffix, kind in _KIND_BY_SUFFIX:
            if key.endswith(suffix):
                kinds.setdefault(kind, key)
                break
        else:
            if key.endswith(".lora_down.weight"):
                kinds.setdefault(PLAIN_LORA, key)
    return kinds


def require_plain_lora(tensors, path, what: str) -> None:
    """Refuse a LyCORIS/OFT/... file where only plain LoRA (lora_down/lora_up/alpha) is understood.

    ``what`` names the reader (a tool or a network module) in the message.
    """
    other = {k: v for k, v in file_kinds(tensors).items() if k != PLAIN_LORA}
    if other:
        kinds = ", ".join(sorted(other))
        example = next(iter(other.values()))
        raise LoRAFileError(
            f"{path}: this is a {kinds} file (e.g. key {example}); {what} handles only plain LoRA/LoCon files "
            "(lora_down/lora_up/alpha). Use it in ComfyUI or A1111 as it is, or with the network module that wrote it "
            "(see ss_network_module in its metadata)"
        )


def lora_file_keys(path) -> list[str]:
    """The tensor names of a LoRA file, read from its header only (a fast check before a model loads)."""
    path = os.fspath(path)
    try:
        with safe_open(path, framework="pt") as f:
            return list(f.keys())
    except (SafetensorError, OSError, ValueError) as e:
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise LoRAFileError(f"{path}: not a readable safetensors file ({reason}); it may be truncated, re-download or re-save it") from None
