"""Caption files next to their images: names, the "already captioned" rule and the atomic write.

A caption file is written under a temporary name and renamed into place (library/atomic.py): an
interrupted run never leaves a half-written caption, and a hand-edited one is never lost by accident.
"""

from __future__ import annotations

import os

from library import atomic
from library.data.folders import IMAGE_EXTENSIONS, normalize_extension
from library.errors import UserError


def check_caption_extension(ext: str) -> str:
    """The extension with a leading dot; UserError when it would overwrite the images themselves."""
    ext = normalize_extension(ext.strip())
    if ext in ("", "."):
        raise UserError("--caption_extension is empty; use e.g. .txt or .caption")
    if ext.lower() in IMAGE_EXTENSIONS:
        raise UserError(f"--caption_extension {ext} is an image extension and would overwrite images; use .txt or .caption")
    return ext


def caption_path(image_path: str, extension: str) -> str:
    """``photo.png`` -> ``photo<extension>`` next to it (kohya's naming)."""
    return os.path.splitext(image_path)[0] + extension


def has_caption(path: str) -> bool:
    """True when ``path`` exists with some non-blank text (an empty file counts as no caption)."""
    try:
        with open(path, "rb") as f:
            return bool(f.read().strip())
    except FileNotFoundError:
        return False
    except OSError:
        return True  # exists but unreadable: never overwrite it by accident


def compose_caption(caption: str, prefix: str = "", suffix: str = "") -> str:
    """One line: the model's caption with whitespace collapsed, prefix and suffix added as given."""
    return f"{prefix}{' '.join(caption.split())}{suffix}"


def write_caption(path: str, text: str) -> None:
    """Write ``text`` and a newline as UTF-8, atomically (temporary file in the same folder, then rename)."""
    try:
        atomic.write_text(path, text + "\n", newline="\n")
    except OSError as e:
        raise UserError(f"cannot write caption file {path}: {e.strerror or e}; check the folder's permissions") from None
