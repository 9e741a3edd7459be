"""Read a .safetensors file one tensor at a time with plain file reads, never a memory map.

Why not ``safetensors.safe_open``: it memory-maps the whole file, and every page a tensor is
copied out of stays resident in the process (file-backed RSS) until the map closes. Loading a
4 GiB fp32 checkpoint then peaks at the file *plus* the model's own copies (~2x the weights).
Reading each tensor with ``readinto`` straight into a freshly allocated tensor keeps the peak at
the model's weights plus one tensor; the OS page cache still speeds up a second load but is not
charged to the process. torch's allocations are 64-byte aligned, so CPU kernels see the same
layout as for weights built any other way.

The header is read by library/safetensors_header.py (the one header reader); every entry is checked
here before use, so a damaged or hostile header gives a clear error instead of a huge allocation or a
wrong tensor.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import torch

from library.safetensors_header import SafetensorsFormatError, read_header  # noqa: F401  (SafetensorsFormatError re-exported)

DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
    "BOOL": torch.bool,
}
for _name, _attr in (("F8_E4M3", "float8_e4m3fn"), ("F8_E5M2", "float8_e5m2"), ("U16", "uint16"),
                     ("U32", "uint32"), ("U64", "uint64")):
    if hasattr(torch, _attr):
        DTYPES[_name] = getattr(torch, _attr)


class Entry:
    """One tensor's place in the file."""

    __slots__ = ("dtype", "shape", "begin", "end")

    def __init__(self, dtype: torch.dtype, shape: tuple[int, ...], begin: int, end: int):
        self.dtype, self.shape, self.begin, self.end = dtype, shape, begin, end


def _entry(name: str, info, data_size: int) -> Entry:
    if not isinstance(info, dict):
        raise SafetensorsFormatError(f"header entry '{name}' is not an object")
    dtype = DTYPES.get(info.get("dtype"))
    if dtype is None:
        raise SafetensorsFormatError(f"tensor '{name}' has the unsupported dtype {info.get('dtype')!r}")
    shape, offsets = info.get("shape"), info.get("data_offsets")
    if not (isinstance(shape, list) and all(isinstance(d, int) and d >= 0 for d in shape)):
        raise SafetensorsFormatError(f"tensor '{name}' has an invalid shape {shape!r}")
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(isinstance(o, int) for o in offsets)):
        raise SafetensorsFormatError(f"tensor '{name}' has invalid data_offsets {offsets!r}")
    begin, end = offsets
    nbytes = math.prod(shape) * torch.empty((), dtype=dtype).element_size()
    if not 0 <= begin <= end <= data_size or end - begin != nbytes:
        raise SafetensorsFormatError(
            f"tensor '{name}' claims bytes {begin}..{end} for {nbytes} bytes of data, but the file holds "
            f"{data_size} bytes of data (truncated download?)")
    return Entry(dtype, tuple(shape), begin, end)


class SafetensorsFile:
    """An open .safetensors file: ``metadata``, ``keys()``, ``entry(key)`` and ``read(key)``."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        header = read_header(self.path)
        self.metadata: dict[str, str] = header.metadata
        self._data_start = header.data_start
        data_size = header.file_size - self._data_start
        self._entries = {name: _entry(name, info, data_size) for name, info in header.entries.items()}

    def keys(self) -> list[str]:
        return list(self._entries)

    def entry(self, key: str) -> Entry:
        return self._entries[key]

    def read(self, key: str) -> torch.Tensor:
        """A new tensor holding ``key``'s data, read from disk (the file is opened per call: no open handle
        outlives a load, and concurrent readers need no shared position)."""
        e = self._entries[key]
        out = torch.empty(e.shape, dtype=e.dtype)
        if e.end > e.begin:
            view = memoryview(out.view(-1).view(torch.uint8).numpy())
            with open(self.path, "rb", buffering=0) as f:
                f.seek(self._data_start + e.begin)
                got = 0
                while got < len(view):
                    n = f.readinto(view[got:])
                    if not n:
                        raise SafetensorsFormatError(f"tensor '{key}' ends early: the file was truncated while reading")
                    got += n
        return out
