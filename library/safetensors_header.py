"""The one reader of a .safetensors header: its tensor entries and ``__metadata__``, checked, without torch.

Why a leaf of its own: the model loader (library/models/safetensors_read.py) and the output guard
(library/output_paths.py, which must not import the model layer or torch) both read headers; one
reader means one set of checks on a damaged or hostile file.

The format (https://github.com/huggingface/safetensors): 8-byte little-endian header length N,
N bytes of JSON ``{name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {...}}``,
then the data; offsets are relative to byte 8 + N.
"""

from __future__ import annotations

import json
import os
import struct
from dataclasses import dataclass

MAX_HEADER = 100 * 1024 * 1024  # safetensors' own limit


class SafetensorsFormatError(ValueError):
    """The file is not a well-formed safetensors file; ``str(e)`` says what is wrong."""


@dataclass
class Header:
    """A parsed header: raw tensor entries by name, the metadata, where the data starts, the file size."""

    entries: dict
    metadata: dict[str, str]
    data_start: int
    file_size: int


def read_header(path: str | os.PathLike) -> Header:
    """The header of ``path``; SafetensorsFormatError when it is not one (OSError when it cannot be read)."""
    size = os.stat(path).st_size
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise SafetensorsFormatError("the file is shorter than a safetensors header")
        (n,) = struct.unpack("<Q", head)
        if n > min(MAX_HEADER, size - 8):
            raise SafetensorsFormatError(f"the header claims {n} bytes; the file is damaged or not safetensors")
        try:
            header = json.loads(f.read(n))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise SafetensorsFormatError(f"the header is not valid JSON ({e})") from None
    if not isinstance(header, dict):
        raise SafetensorsFormatError("the header is not a JSON object")
    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise SafetensorsFormatError("__metadata__ must map names to strings")
    return Header(header, metadata, 8 + n, size)
