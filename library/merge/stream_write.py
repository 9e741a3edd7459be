"""Write a .safetensors file one tensor at a time, atomically.

safetensors' own ``save_file`` needs every tensor in memory at once: 7 GB for an fp16 SDXL
merge, twice that in float32. The format is simple (8-byte header length, JSON header
with dtype/shape/offsets, raw little-endian data), and shapes and dtypes are known before
any arithmetic, so the header is written first and each tensor is computed, written and
dropped in turn. The file goes through library.atomic (``<path>.tmp``, renamed into place at the end).
"""

from __future__ import annotations

import json
import os
import struct
import sys
from collections.abc import Callable, Iterable

import torch

from library.atomic import atomic_write

DTYPE_NAMES = {
    torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
    torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8", torch.uint8: "U8",
    torch.bool: "BOOL",
}
for _name, _code in (("float8_e4m3fn", "F8_E4M3"), ("float8_e5m2", "F8_E5M2")):
    if hasattr(torch, _name):
        DTYPE_NAMES[getattr(torch, _name)] = _code


def _nbytes(shape, dtype: torch.dtype) -> int:
    n = 1
    for d in shape:
        n *= int(d)
    return n * torch.empty((), dtype=dtype).element_size()


def write_streaming(
    path: str | os.PathLike,
    entries: Iterable[tuple[str, tuple[int, ...], torch.dtype]],
    produce: Callable[[str], torch.Tensor],
    metadata: dict[str, str] | None = None,
) -> None:
    """Write ``entries`` (name, shape, dtype) to ``path``; ``produce(name)`` makes each tensor when its turn comes.

    A produced tensor must have exactly the announced shape and dtype (checked).
    """
    if sys.byteorder != "little":  # pragma: no cover - every platform torch ships for is little-endian
        raise RuntimeError("streaming safetensors writes need a little-endian machine")
    entries = list(entries)
    header: dict[str, object] = {}
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    offset = 0
    for name, shape, dtype in entries:
        size = _nbytes(shape, dtype)
        header[name] = {"dtype": DTYPE_NAMES[dtype], "shape": [int(d) for d in shape], "data_offsets": [offset, offset + size]}
        offset += size
    raw = json.dumps(header, separators=(",", ":")).encode("utf-8")
    raw += b" " * (-(8 + len(raw)) % 8)  # data starts 8-byte aligned, as safetensors writes it
    with atomic_write(str(path), "wb") as f:
        f.write(struct.pack("<Q", len(raw)))
        f.write(raw)
        for name, shape, dtype in entries:
            t = produce(name)
            if tuple(t.shape) != tuple(shape) or t.dtype != dtype:
                raise RuntimeError(f"{name}: produced {tuple(t.shape)} {t.dtype}, announced {tuple(shape)} {dtype}")
            t = t.detach().to("cpu").contiguous()
            if t.numel():
                f.write(t.reshape(-1).view(torch.uint8).numpy().data)
