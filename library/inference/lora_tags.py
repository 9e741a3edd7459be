"""A1111-style LoRA tags in prompts: ``<lora:name>``, ``<lora:name:0.8>``, ``<lora:name:te:unet>``.

Tags are taken out of the prompt text before it reaches the text encoder (as A1111 does)
and name a file in ``--lora_dir`` by its stem. Named weights ``te=0.5`` / ``unet=1``
are accepted too. Pure string and folder logic, so it is tested without a model.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from library.errors import UserError

TAG_RE = re.compile(r"<(?:lora|lyco):([^>]*)>", re.IGNORECASE)
LORA_SUFFIX = ".safetensors"


@dataclass(frozen=True)
class LoraTag:
    """One tag: the name as written and the text-encoder / UNet multipliers."""

    name: str
    te: float = 1.0
    unet: float = 1.0


def _weight(text: str, tag: str, where: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise UserError(f"{where}: '{tag}' has weight '{text}', which is not a number; write e.g. <lora:name:0.8>") from None


def parse_tag(body: str, where: str = "prompt") -> LoraTag:
    """The inside of ``<lora:...>`` -> LoraTag; one weight sets both parts, two set te then unet."""
    tag = f"<lora:{body}>"
    name, *params = [p.strip() for p in body.split(":")]
    if not name:
        raise UserError(f"{where}: '{tag}' has no LoRA name; write <lora:name:weight>")
    te = unet = None
    positional = []
    for p in params:
        key, eq, value = p.partition("=")
        if eq:
            if key.strip() == "te":
                te = _weight(value.strip(), tag, where)
            elif key.strip() == "unet":
                unet = _weight(value.strip(), tag, where)
            else:
                raise UserError(f"{where}: '{tag}' has unknown parameter '{key.strip()}' (known: te=, unet=)")
        elif p:
            positional.append(_weight(p, tag, where))
    if len(positional) > 2:
        raise UserError(f"{where}: '{tag}' has {len(positional)} weights; give one (both parts) or two (te, unet)")
    if te is None:
        te = positional[0] if positional else 1.0
    if unet is None:  # A1111: the UNet weight defaults to the text-encoder weight
        unet = positional[1] if len(positional) > 1 else te
    return LoraTag(name, te, unet)


def split_lora_tags(prompt: str, where: str = "prompt") -> tuple[str, list[LoraTag]]:
    """(prompt without tags, tags in order). Whitespace left by a removed tag is collapsed."""
    tags = [parse_tag(m.group(1), where) for m in TAG_RE.finditer(prompt)]
    text = TAG_RE.sub(" ", prompt)
    text = re.sub(r"[ \t]+", " ", text).strip()
    text = re.sub(r"\s+,", ",", text)
    return text, tags


def available_loras(lora_dir: str | os.PathLike) -> dict[str, list[Path]]:
    """Stem -> files (``*.safetensors`` in the folder and its subfolders, like A1111)."""
    found: dict[str, list[Path]] = {}
    for path in sorted(Path(lora_dir).rglob("*" + LORA_SUFFIX)):
        if path.is_file():
            found.setdefault(path.stem, []).append(path)
    return found


def _names_list(names, limit: int = 20) -> str:
    names = sorted(names)
    if not names:
        return "none (the folder holds no .safetensors files)"
    shown = ", ".join(names[:limit])
    return shown + (f", ... ({len(names) - limit} more)" if len(names) > limit else "")


def resolve_lora(name: str, lora_dir: str | os.PathLike | None, where: str = "prompt", found=None) -> Path:
    """The file a tag names: exact stem first, then case-insensitive; clear errors otherwise."""
    if lora_dir is None:
        raise UserError(f"{where}: the prompt uses <lora:{name}:...> but no --lora_dir was given; pass the folder holding {name}.safetensors")
    if not Path(lora_dir).is_dir():
        raise UserError(f"--lora_dir {lora_dir}: no such folder; pass the folder holding your LoRA files")
    found = available_loras(lora_dir) if found is None else found
    matches = found.get(name)
    if matches is None:
        matches = [p for stem, paths in found.items() if stem.lower() == name.lower() for p in paths]
    if not matches:
        raise UserError(
            f"{where}: LoRA '{name}' not found in --lora_dir {lora_dir}; available: {_names_list(found)}"
        )
    if len(matches) > 1:
        raise UserError(
            f"{where}: LoRA name '{name}' is ambiguous in --lora_dir {lora_dir} ({', '.join(str(p) for p in matches)}); "
            "rename one of the files"
        )
    return matches[0]
