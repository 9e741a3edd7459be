"""Read tensors from checkpoint files safely; write safetensors atomically.

``.safetensors`` is read lazily (one tensor at a time, so a 7 GB fp16 SDXL file never
sits in memory twice). ``.ckpt``/``.pt``/``.pth``/``.bin`` are read only with
``torch.load(weights_only=True)``: a pickle that references code is refused before any
of it runs. We never write pickles.
"""

from __future__ import annotations

import os
import pickle
import re
from pathlib import Path

import torch
from safetensors.torch import save_file

from library.atomic import atomic_path
from library.models.errors import ModelLoadError, ModelSaveError, one_line
from library.models.safetensors_read import SafetensorsFile, SafetensorsFormatError

SAFETENSORS_SUFFIXES = (".safetensors", ".sft")
PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin")


def _looks_like_safetensors(path: Path) -> bool:
    """Sniff the header: 8-byte little-endian length, then a JSON object."""
    with open(path, "rb") as f:
        head = f.read(9)
    return len(head) == 9 and head[8:9] == b"{"


class SafetensorsReader:
    """Lazy reader over one .safetensors file: one tensor at a time, read from disk (not memory-mapped),
    so loading never holds the file and the model in memory together (see safetensors_read)."""

    def __init__(self, path: Path):
        self.path = path
        try:
            self._file = SafetensorsFile(path)
        except SafetensorsFormatError as e:
            raise ModelLoadError(
                f"{path}: the safetensors file is damaged or incomplete ({one_line(e)}); "
                "re-download it or save it again"
            ) from None
        self.metadata = dict(self._file.metadata)
        self._keys = self._file.keys()

    def keys(self) -> list[str]:
        return self._keys

    def shape(self, key: str) -> tuple[int, ...]:
        return self._file.entry(key).shape

    def dtype(self, key: str) -> torch.dtype:
        """The stored dtype, from the header (no tensor data is read)."""
        return self._file.entry(key).dtype

    def get(self, key: str) -> torch.Tensor:
        try:
            return self._file.read(key)
        except (SafetensorsFormatError, OSError) as e:
            raise ModelLoadError(
                f"{self.path}: tensor '{key}' cannot be read ({one_line(e)}); the file is damaged, re-download it"
            ) from None


class PickleReader:
    """A torch pickle read with ``weights_only=True`` (memory-mapped where the format allows)."""

    def __init__(self, path: Path):
        self.path = path
        self.metadata: dict[str, str] = {}
        obj = torch_load_weights_only(path)
        if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
            obj = obj["state_dict"]
        if not isinstance(obj, dict):
            raise ModelLoadError(
                f"{path}: holds a {type(obj).__name__}, not a dict of tensors; pass a Stable Diffusion checkpoint"
            )
        self._sd = {k: v for k, v in obj.items() if isinstance(k, str) and isinstance(v, torch.Tensor)}

    def keys(self) -> list[str]:
        return list(self._sd)

    def shape(self, key: str) -> tuple[int, ...]:
        return tuple(self._sd[key].shape)

    def dtype(self, key: str) -> torch.dtype:
        return self._sd[key].dtype

    def get(self, key: str) -> torch.Tensor:
        return self._sd[key]


def torch_load_weights_only(path: Path, code_fix: str = "get a .safetensors version of this model",
                            damaged_fix: str = "re-download it"):
    """``torch.load(weights_only=True)``: a pickle that references code is refused, never run.

    ``code_fix`` / ``damaged_fix``: what the user should do, for callers reading other pickles
    (e.g. kohya state folders, library/train/kohya_state.py)."""
    def load(mmap: bool):
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)

    try:
        try:
            return load(mmap=True)
        except RuntimeError as e:
            if "mmap" not in str(e):  # legacy (pre-zip) format cannot be memory-mapped
                raise
            return load(mmap=False)
    except pickle.UnpicklingError as e:
        found = re.search(r"GLOBAL ([\w.]+)", str(e))
        if found:  # a well-formed pickle that wants to import something
            raise ModelLoadError(
                f"{path}: refused to load: the pickle references code ({found.group(1)}), and .ckpt/.pt files "
                f"are only read with weights_only=True so nothing in them runs; {code_fix}"
            ) from None
        operand = re.search(r"Unsupported operand \d+", str(e))
        raise _damaged(path, operand.group(0) if operand else "not a readable pickle", damaged_fix) from None
    except Exception as e:  # noqa: BLE001 - garbage input makes the unpickler fail in many ways
        raise _damaged(path, e, damaged_fix) from None


def _damaged(path: Path, e: Exception | str, fix: str = "re-download it") -> ModelLoadError:
    detail = e if isinstance(e, str) else one_line(f"{type(e).__name__}: {e}")[:200]
    return ModelLoadError(f"{path}: the checkpoint is damaged or not a PyTorch file ({detail}); {fix}")


def open_checkpoint(path: str | os.PathLike) -> SafetensorsReader | PickleReader:
    """A reader for a single-file checkpoint: safetensors by suffix or content, else a weights-only pickle."""
    path = Path(path)
    if not path.is_file():
        raise ModelLoadError(f"{path}: no such file; check the model path")
    if path.suffix.lower() in SAFETENSORS_SUFFIXES or _looks_like_safetensors(path):
        return SafetensorsReader(path)
    return PickleReader(path)


def write_safetensors_atomic(path: str | os.PathLike, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> None:
    """Write through library.atomic; a crash never leaves a half file under the name."""
    path = Path(path)
    if path.suffix.lower() not in SAFETENSORS_SUFFIXES:
        raise ModelSaveError(f"{path}: models are saved as safetensors only; use a name ending in .safetensors")
    if not path.parent.is_dir():
        raise ModelSaveError(f"{path}: the folder {path.parent} does not exist; create it or choose another path")
    with atomic_path(str(path), make_folder=False) as tmp:
        save_file(tensors, tmp, metadata=metadata)
