"""kohya's sample-prompt files: ``.txt`` lines ``prompt --n negative --w 512 --h 768 --d 42 --s 30 --l 7.5
--ss euler_a``, and ``.toml`` / ``.json`` files of kohya's prompt dicts (``prompt``, ``negative_prompt``,
``width``, ``height``, ``sample_steps``, ``scale``, ``seed``, ``sample_sampler``).

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
    """All prompts of a kohya prompt file, by extension as sd-scripts' ``load_prompts``: ``.toml`` (a
    ``[prompt]`` table of defaults with ``[[prompt.subset]]`` prompts), ``.json`` (a list of prompt objects
    or prompt lines), anything else one prompt a line. ``option`` names the file in errors."""
    import os
    import stat

    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise UserError(f"{option} {path}: file not found") from None
    if not stat.S_ISREG(info.st_mode):
        raise UserError(f"{option} {path}: not a regular file; give a .txt, .toml or .json prompt file")
    if info.st_size > MAX_PROMPT_FILE_BYTES:
        raise UserError(f"{option} {path}: {info.st_size} bytes is too large for a prompt file "
                        f"(at most {MAX_PROMPT_FILE_BYTES // (1024 * 1024)} MiB); is it the right file?")
    try:
        with open(path, encoding="utf-8-sig") as f:
            text = f.read()
    except UnicodeDecodeError as e:
        raise UserError(f"{option} {path}: not UTF-8 text ({e.reason} at byte {e.start}); save it as UTF-8") from None
    kind = os.path.splitext(path)[1].lower()
    if kind == ".toml":
        prompts = _toml_prompts(text, path, option, defaults)
    elif kind == ".json":
        prompts = _json_prompts(text, path, option, defaults)
    else:
        prompts = _text_prompts(text, path, defaults)
    if not prompts:
        raise UserError(f"{option} {path}: no prompts in the file ({_FORMAT_HINT.get(kind, _FORMAT_HINT[''])})")
    return prompts


# kohya's prompt-dict keys (train_util.line_to_prompt_dict / sample_image_inference) -> SamplePrompt fields
DICT_KEYS = {"prompt": "prompt", "negative_prompt": "negative_prompt", "width": "width", "height": "height",
             "seed": "seed", "sample_steps": "steps", "scale": "scale", "sample_sampler": "sampler"}
# kohya prompt keys for other trainers (FLUX, SD3, Lumina, ControlNet): accepted with a warning
OTHER_MODEL_KEYS = ("guidance_scale", "controlnet_image", "cfg_trunc_ratio", "renorm_cfg", "flow_shift", "enum")
_FORMAT_HINT = {
    "": "one prompt per line, '#' for comments",
    ".toml": "a [prompt] table with [[prompt.subset]] tables, each with prompt = \"...\"",
    ".json": "a list like [{\"prompt\": \"...\", \"width\": 512}]",
}


def _text_prompts(text: str, path: str, defaults: dict | None) -> list[SamplePrompt]:
    prompts = []
    for n, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if line and not line.startswith("#"):
            prompts.append(parse_prompt_line(line, f"{path}:{n}", defaults))
    return prompts


def _toml_prompts(text: str, path: str, option: str, defaults: dict | None) -> list[SamplePrompt]:
    try:
        import tomllib
    except ImportError:  # Python 3.10
        import tomli as tomllib  # type: ignore[no-redef]
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise UserError(f"{option} {path}: not valid TOML ({e}); expected {_FORMAT_HINT['.toml']}") from None
    table = data.get("prompt")
    extra = sorted(set(data) - {"prompt"})
    if not isinstance(table, dict) or extra:
        what = f"unknown top-level key {extra[0]!r}" if extra else "no [prompt] table"
        raise UserError(f"{option} {path}: {what}; expected {_FORMAT_HINT['.toml']}")
    subsets = table.get("subset", [])
    if not isinstance(subsets, list) or not all(isinstance(x, dict) for x in subsets):
        raise UserError(f"{option} {path}: prompt.subset must be [[prompt.subset]] tables")
    shared = {k: v for k, v in table.items() if k != "subset"}
    return [_dict_prompt({**shared, **sub}, f"{path} [[prompt.subset]] #{i}", defaults)
            for i, sub in enumerate(subsets, 1)]


def _json_prompts(text: str, path: str, option: str, defaults: dict | None) -> list[SamplePrompt]:
    import json

    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise UserError(f"{option} {path}: not valid JSON ({e.msg} at line {e.lineno}); expected "
                        f"{_FORMAT_HINT['.json']}") from None
    if not isinstance(data, list):
        raise UserError(f"{option} {path}: the JSON must be a list of prompts; expected {_FORMAT_HINT['.json']}")
    prompts = []
    for i, item in enumerate(data, 1):
        where = f"{path} item {i}"
        if isinstance(item, str):
            prompts.append(parse_prompt_line(item, where, defaults))
        elif isinstance(item, dict):
            prompts.append(_dict_prompt(item, where, defaults))
        else:
            raise UserError(f"{where}: a prompt is an object like {{\"prompt\": \"...\"}} or a prompt line, got "
                            f"{type(item).__name__}")
    return prompts


def _dict_prompt(item: dict, where: str, defaults: dict | None) -> SamplePrompt:
    """One kohya prompt dict -> SamplePrompt; unknown keys, wrong types and out-of-range numbers name ``where``."""
    import logging

    sample = SamplePrompt(prompt="", **(defaults or {}))
    for key, value in item.items():
        if key in OTHER_MODEL_KEYS:
            logging.getLogger("lorasmith.train").warning(
                "%s: %s is a kohya prompt key for other model families; SD/SDXL samples do not use it", where, key)
            continue
        if key not in DICT_KEYS:
            raise UserError(f"{where}: unknown key {key!r} (known: {', '.join(DICT_KEYS)})")
        name = DICT_KEYS[key]
        if name in LIMITS:
            value = _dict_number(key, name, value, where)
        elif not isinstance(value, str):
            raise UserError(f"{where}: {key} must be text, got {value!r}")
        elif name == "sampler":
            if value.lower() not in SAMPLERS:
                raise UserError(f"{where}: unknown sampler {value!r} (known: {', '.join(SAMPLERS)})")
            value = value.lower()
        setattr(sample, name, value)
    if not sample.prompt.strip():
        raise UserError(f"{where}: no prompt (add prompt = \"...\")")
    return sample


def _dict_number(key: str, name: str, value, where: str):
    """A TOML/JSON number for ``name``, within LIMITS (whole for all but scale)."""
    whole = name != "scale"
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or (whole and not float(value).is_integer()):
        raise UserError(f"{where}: {key} must be {'a whole number' if whole else 'a number'}, got {value!r}")
    low, high = LIMITS[name]
    if not low <= value <= high:
        raise UserError(f"{where}: {key} ({name}) must be between {low} and {high}, got {value}")
    return int(value) if whole else float(value)
