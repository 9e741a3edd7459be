"""The per-image record every layout produces.

Why: folders, metadata.jsonl, image/text pairs and ``datasets`` dataset all end as the same list of
``ImageRecord``s, so reg balancing, bucketing, caching and the torch Dataset never care where an
image came from. Embedded images (a ``datasets`` dataset) carry a ``blob`` with ``read()`` instead of a
path.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Optional, Protocol, Tuple

from .params import SubsetParams


class Blob(Protocol):
    """An image stored inside another file (e.g. a row of an Arrow table)."""

    def read(self) -> bytes: ...

    def fingerprint(self) -> str: ...


@dataclass
class ImageRecord:
    """One image with its raw caption; bucket fields are filled by ``prepare``."""

    key: str
    path: Optional[str]
    caption: str
    subset: SubsetParams
    cache_stem: str
    blob: Optional[Blob] = None
    size: Optional[Tuple[int, int]] = None
    num_repeats: int = 1
    bucket_reso: Optional[Tuple[int, int]] = None
    resized_size: Optional[Tuple[int, int]] = None
    mask_path: Optional[str] = None  # conditioning_data_dir mask of this image (masks.py)

    @property
    def is_reg(self) -> bool:
        return self.subset.is_reg

    @property
    def display_name(self) -> str:
        return self.path or self.key

    def source(self):
        """A path or bytes, as accepted by image_size.read_image_size and images.load_image."""
        return self.path if self.blob is None else self.blob.read()

    def fingerprint(self) -> str:
        """Changes when the image content (probably) changes: size + mtime for files."""
        if self.blob is not None:
            return self.blob.fingerprint()
        st = os.stat(self.path)
        return f"{st.st_size}:{st.st_mtime_ns}"
