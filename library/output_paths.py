"""Who may write where: output names, and tool outputs that must never clobber an input or a stranger.

Why one owner: training's ``--output_name``, the ComfyUI node's ``lora_name`` and every tool's
``--save_to`` reach the file system; each used to check (or not) its own way. The rules:

- a name is a plain, visible, portable file name that still fits the file system once our longest
  suffix is appended (``check_output_name``) — checked before any model loads;
- a tool never writes over one of its inputs, however the path is spelled (resolved paths, symlinks,
  hard links), and never over an existing file of another kind (an image, a model where a LoRA was
  asked for, a folder) unless ``--overwrite`` says so (``check_tool_output``).
"""

from __future__ import annotations

import os
import unicodedata
from typing import Iterable, Optional

from library.errors import UserError
from library.safetensors_header import SafetensorsFormatError, read_header
from library.vocabulary import is_network_key

# The longest thing we append to an output name: a sample image of an epoch with a 10-digit seed, being
# written (``<name>_e000001_00_2147483647.png.tmp``); states and step files are shorter
# (``<name>-step00000001-state.deleting``, ``<name>-step00000001.safetensors.tmp``).
LONGEST_SUFFIX = "_e000001_00_2147483647.png.tmp"
WINDOWS_RESERVED = {"CON", "PRN", "AUX", "NUL", *(f"COM{i}" for i in range(1, 10)), *(f"LPT{i}" for i in range(1, 10))}
WINDOWS_FORBIDDEN = set('<>:"|?*')
_CHECKPOINT_MARKERS = ("model.diffusion_model.", "first_stage_model.", "cond_stage_model.", "conditioner.embedders.")


def _name_max(folder: Optional[str]) -> int:
    """The file system's longest file name in bytes for ``folder`` (its nearest existing parent)."""
    probe = os.path.abspath(folder or ".")
    while not os.path.isdir(probe) and os.path.dirname(probe) != probe:
        probe = os.path.dirname(probe)
    try:
        return int(os.pathconf(probe, "PC_NAME_MAX"))
    except (OSError, ValueError, AttributeError):  # Windows has no pathconf; NTFS allows 255
        return 255


def check_output_name(name, folder: Optional[str] = None, what: str = "output_name") -> str:
    """Refuse a name that would be hidden, leave its folder, break on another OS, or not fit the disk; the one
    rule for ``--output_name`` and the ComfyUI node's ``lora_name``/``lora_checkpoint_folder``. Returns ``name``."""
    def refuse(why: str) -> None:
        raise UserError(f"{what} {name!r} must be a plain file name: it {why}; choose one such as 'my_lora'")

    if not isinstance(name, str) or not name.strip():
        refuse("is empty")
    if "/" in name or "\\" in name or os.sep in name or (os.altsep and os.altsep in name):
        refuse("contains a path separator (put folders in --output_dir)")
    if name in (".", "..") or name.startswith("."):
        refuse("starts with a dot, so the file would be hidden (or point at a parent folder)")
    # control characters, line/paragraph separators, and invisible format characters (zero-width, bidi overrides)
    bad = [c for c in name if unicodedata.category(c) in ("Cc", "Cf", "Co", "Cs", "Cn", "Zl", "Zp")]
    if bad:
        refuse(f"contains the control character {bad[0]!r} (control and invisible characters are refused)")
    forbidden = sorted(WINDOWS_FORBIDDEN.intersection(name))
    if forbidden:
        refuse(f"contains {''.join(forbidden)!r}, which Windows does not allow in file names")
    if name != name.rstrip(" ."):
        refuse("ends in a space or a dot, which Windows drops")
    if name.split(".")[0].upper() in WINDOWS_RESERVED:
        refuse("is a reserved device name on Windows")
    limit = _name_max(folder)
    longest = len(name.encode("utf-8")) + len(LONGEST_SUFFIX)
    if longest > limit:
        refuse(f"is too long: with the suffixes lorasmith appends (up to {len(LONGEST_SUFFIX)} characters, e.g. "
               f"'{LONGEST_SUFFIX}') a file name would take {longest} bytes, and this file system allows {limit}")
    return name


def _safetensors_keys(path: str) -> Optional[list]:
    """Tensor names of a safetensors file from its header alone (the one header reader), or None if it is not one."""
    try:
        return list(read_header(path).entries)
    except (OSError, SafetensorsFormatError):
        return None


def file_kind(path: str) -> str:
    """'lora', 'checkpoint', 'folder' or 'other' for an existing path (read from the header, not the name)."""
    if os.path.isdir(path):
        return "folder"
    keys = _safetensors_keys(path)
    if keys is None:
        return "other"
    if any(is_network_key(k) for k in keys):
        return "lora"
    if any(k.startswith(_CHECKPOINT_MARKERS) for k in keys) or keys:
        return "checkpoint"
    return "other"


def _same_file(a: str, b: str) -> bool:
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    try:
        return os.path.samefile(a, b)  # hard links: same device and inode
    except OSError:
        return False


def check_tool_output(path: str, inputs: Iterable[Optional[str]], kind: Optional[str], overwrite: bool = False,
                      option: str = "--save_to") -> None:
    """Refuse ``path`` if it is (or lies inside) an input, or is an existing file of another ``kind``
    ('lora', 'checkpoint', 'folder'; None: only the input check, when the kind is not known yet)."""
    path = os.fspath(path)
    for source in inputs:
        if not source:
            continue
        source = os.fspath(source)
        if _same_file(path, source):
            raise UserError(f"{option} {path} is one of the inputs ({source}: the same file, or a link to it); "
                            "write the result to a new file")
    if kind is None or not os.path.lexists(path):
        return
    found = file_kind(path)
    if kind == "folder" and found != "folder":
        raise UserError(f"{option} {path} is an existing file, not a folder; give a folder")
    if found == kind or overwrite:
        if found == "folder" and kind != "folder":
            raise UserError(f"{option} {path} is a folder; give a file name")
        return
    shown = {"lora": "a LoRA", "checkpoint": "a model checkpoint", "folder": "a folder"}.get(found, "not a safetensors file")
    wanted = {"lora": "a LoRA", "checkpoint": "a model checkpoint"}.get(kind, kind)
    raise UserError(f"{option} {path} already exists and is {shown}, not {wanted}; choose another name, "
                    "or pass --overwrite to replace it")
