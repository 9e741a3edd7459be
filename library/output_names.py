"""One rule for the names of files a run creates (``--output_name``, the ComfyUI node's ``lora_name``).

Why a module of its own: a name is joined to a folder and gets suffixes (``-step00000100-state``,
``_options.toml``...). A name that is hidden (leading dot, ``..``), holds a path separator or a control
character, or is too long for the file system would leave the folder, vanish from file listings, or
fail at the first save, after the model has loaded. Every caller checks names here, before any work.
This module imports nothing heavy, so the ComfyUI node and the option layer can both use it.
"""

from __future__ import annotations

import os

from library.errors import UserError

# Characters that separate folders or are not allowed in Windows file names.
_FORBIDDEN = set('/\\:*?"<>|')
# Room left for the longest suffix a run adds to the name (``-step00000100-state``, ``_report.html``,
# ``.safetensors.tmp`` and similar), so every derived name still fits.
SUFFIX_ROOM = 40
_DEFAULT_NAME_MAX = 255  # bytes, on every common file system
# Device names Windows reserves whatever the extension (CON.safetensors opens the console).
_WINDOWS_DEVICES = {"con", "prn", "aux", "nul"} | {f"{d}{i}" for d in ("com", "lpt") for i in range(1, 10)}


def _name_max(folder: str | None) -> int:
    """The longest file name (in bytes) the file system of ``folder`` allows."""
    while folder and not os.path.isdir(folder):
        parent = os.path.dirname(folder)
        folder = parent if parent != folder else None
    if folder and hasattr(os, "pathconf"):
        try:
            return int(os.pathconf(folder, "PC_NAME_MAX"))
        except (OSError, ValueError):
            pass
    return _DEFAULT_NAME_MAX


def check_output_name(name: str, option: str = "output_name", folder: str | None = None) -> str:
    """``name`` stripped of surrounding spaces, or a UserError naming ``option`` and how to fix it.

    ``folder`` (when given) is where the files go; its file system's name limit is used.
    """
    text = "" if name is None else str(name)
    stripped = text.strip()
    fix = "use a plain name such as my_lora (letters, digits, - and _; no folders)"
    if not stripped:
        raise UserError(f"{option} is empty; {fix}")
    if stripped in (".", ".."):
        raise UserError(f"{option} {text!r} names a folder, not a file; {fix}")
    if stripped.startswith("."):
        raise UserError(f"{option} {text!r} starts with a dot, so its files would be hidden; {fix}")
    if _FORBIDDEN & set(stripped) or os.path.isabs(stripped):
        raise UserError(f"{option} {text!r} contains a path separator or one of : * ? \" < > |; {fix}")
    if not stripped.isprintable():
        raise UserError(f"{option} {text!r} contains control or invisible characters; {fix}")
    if stripped.split(".", 1)[0].strip().lower() in _WINDOWS_DEVICES or stripped.endswith("."):
        raise UserError(f"{option} {text!r} is a name Windows reserves or changes (device names such as CON or "
                        f"NUL, a trailing dot); {fix}")
    limit = _name_max(folder) - SUFFIX_ROOM
    size = len(stripped.encode("utf-8"))
    if size > limit:
        raise UserError(f"{option} is {size} bytes long; the file system allows {limit} for a name here "
                        f"(its files add suffixes); use a shorter name")
    return stripped
