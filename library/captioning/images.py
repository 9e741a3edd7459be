"""The images of a folder to caption, and reading them ahead of the model in order.

A damaged image must not stop the others: reading returns the exception in its place, and the caller
skips it with a warning naming the file.
"""

from __future__ import annotations

import os
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from itertools import islice
from typing import Callable, Iterable, Iterator, List, Tuple, Union

import numpy as np

from library.data.folders import IMAGE_EXTENSIONS, count_images, is_image_name
from library.errors import UserError


def find_images(folder: str, recursive: bool = False) -> List[str]:
    """Sorted paths of the images in ``folder`` (and below with ``recursive``); UserError if none."""
    if not os.path.exists(folder):
        raise UserError(f"train_data_dir {folder} does not exist; check the path")
    if not os.path.isdir(folder):
        raise UserError(f"train_data_dir {folder} is a file, not a folder of images")
    found = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".")) if recursive else []
        found += [os.path.join(dirpath, n) for n in filenames if is_image_name(n) and not n.startswith(".")]
    if found:
        return sorted(found)
    kinds = ", ".join(IMAGE_EXTENSIONS)
    if not recursive:
        subs = sorted(e.path for e in os.scandir(folder) if e.is_dir() and not e.name.startswith("."))
        with_images = [s for s in subs if count_images(s)]
        if with_images:
            raise UserError(
                f"no images directly in {folder}, but its subfolder {with_images[0]} has some; "
                "add --recursive to caption the subfolders too"
            )
    raise UserError(f"no images ({kinds}) in {folder}{' or its subfolders' if recursive else ''}; check the path")


Loaded = Union[np.ndarray, Exception]


def load_in_order(paths: Iterable[str], load: Callable[[str], np.ndarray], workers: int = 0) -> Iterator[Tuple[str, Loaded]]:
    """Yield ``(path, load(path) or the exception it raised)`` in order; ``workers`` threads read ahead.

    Read-ahead is bounded (4 images per worker), so a slow model never makes memory grow.
    """

    def attempt(path: str) -> Loaded:
        try:
            return load(path)
        except Exception as e:  # a damaged file must not stop the other images
            return e

    if workers <= 0:
        for path in paths:
            yield path, attempt(path)
        return
    it = iter(paths)
    with ThreadPoolExecutor(workers) as pool:
        pending = deque((p, pool.submit(attempt, p)) for p in islice(it, 4 * workers))
        while pending:
            path, future = pending.popleft()
            nxt = next(it, None)
            if nxt is not None:
                pending.append((nxt, pool.submit(attempt, nxt)))
            yield path, future.result()


def describe_failure(path: str, error: Exception) -> str:
    """A one-line reason naming the file (DatasetError messages already do)."""
    text = str(error)
    return text if path in text else f"cannot read image {path} ({type(error).__name__}: {text})"
