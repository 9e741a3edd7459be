"""kohya's sample-prompt syntax: ``prompt --n negative --w 512 --h 768 --d 42 --s 30 --l 7.5 --ss euler_a``.

Why torch-free: a prompt file is checked when training starts, before any model loads, so a typo or an
impossible size costs seconds; the sampler during training and tools/gen_img.py read prompts with the
same functions. Every number has a range: a ``--w 100000`` or ``--s 10**9`` would otherwise be found
only at the first sample, minutes or hours in, by running out of memory or never finishing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from library.errors import UserError
from library.vocabulary import SAMPLERS

OPTION_KEYS = {"n": "negative_prompt", "w": "width", "h": "height", "d": "seed", "s": "steps", "l": "scale", "ss": "sampler"}
# name -> (lowest, highest) allowed; sizes are pixels (the sampler rounds to its VAE's multiple)
LIMITS = {"width": (8, 4096), "height": (8, 4096), "seed": (0, 2**63 - 1), "steps": (1, 1000), "scale": (0.0, 100.0)}
MAX_PROMPT_FILE_BYTES = 10 * 1024 * 1024


@dataclass
class SamplePrompt:
    prompt: str
    negative_prompt: str = ""
    width: int = 512
    height: int = 512
    seed: int | None = None
    steps: int = 30
    scale: float = 7.5
    sampler: str | None = None
    extra: dict = field(default_factory=dict)


def parse_prompt_line(line: str, where: str = "prompt", defaults: dict | None = None) -> SamplePrompt:
    """One prompt line -> SamplePrompt; unknown ``--x`` options and out-of-range numbers name the line."""
    parts = line.split(" --")
    sample = SamplePrompt(prompt=parts[0].strip(), **(defaults or {}))
    for part in parts[1:]:
        key, _, value = part.strip().partition(" ")
        if key not in OPTION_KEYS:
            known = ", ".join(f"--{k}" for k in OPTION_KEYS)
            raise UserError(f"{where}: unknown option '--{key}' (known: {known})")
        name, value = OPTION_KEYS[key], value.strip()
        if name == "sampler":
            if value.lower() not in SAMPLERS:
                raise UserError(f"{where}: unknown sampler '{value}' (known: {', '.join(SAMPLERS)})")
            value = value.lower()
        elif name in LIMITS:
            value = _number(key, name, value, where)
        setattr(sample, name, value)
    return sample


def _number(key: str, name: str, text: str, where: str):
    kind = float if name == "scale" else int
    try:
        value = kind(text)
    except ValueError:
        raise UserError(f"{where}: option --{key} needs {'a number' if kind is float else 'a whole number'}, "
                        f"got '{text}'") from None
    low, high = LIMITS[name]
    if not math.isfinite(value) or not low <= value <= high:
        raise UserError(f"{where}: option --{key} ({name}) must be between {low} and {high}, got {text}")
    return value


def read_prompt_file(path: str, defaults: dict | None = None, option: str = "--sample_prompts") -> list[SamplePrompt]:
    """All prompts of a kohya-style ``.txt`` prompt file; ``option`` names it in errors."""
    import os
    import stat

    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise UserError(f"{option} {path}: file not found") from None
    if not stat.S_ISREG(info.st_mode):
        raise UserError(f"{option} {path}: not a regular file; give a .txt prompt file")
    if info.st_size > MAX_PROMPT_FILE_BYTES:
        raise UserError(f"{option} {path}: {info.st_size} bytes is too large for a prompt file "
                        f"(at most {MAX_PROMPT_FILE_BYTES // (1024 * 1024)} MiB); is it the right file?")
    try:
        with open(path, encoding="utf-8-sig") as f:
            lines = f.read().splitlines()
    except UnicodeDecodeError as e:
        raise UserError(f"{option} {path}: not UTF-8 text ({e.reason} at byte {e.start}); save it as UTF-8") from None
    prompts = []
    for n, line in enumerate(lines, 1):
        line = line.strip()
        if line and not line.startswith("#"):
            prompts.append(parse_prompt_line(line, f"{path}:{n}", defaults))
    if not prompts:
        raise UserError(f"{option} {path}: no prompts in the file (one prompt per line, '#' for comments)")
    return prompts
