"""The keys of a ``dataset_config`` TOML, from the option schema: which table takes a key, its type, default, range.

Why: kohya's dataset file (``[general]`` -> ``[[datasets]]`` -> ``[[datasets.subsets]]``) repeats about forty
training options under their own names (two renamed: ``train_batch_size`` is ``batch_size``,
``dataset_repeats`` is ``num_repeats``). Each of those options states its ``level`` in definitions.py; the few
keys that exist only in a dataset file (``image_dir``, ``is_reg``, ...) are Option records here. library/data
builds its parameter classes and its key checks from this module, so the dataset file, the command line and
the docs cannot disagree.

Levels (schema.LEVELS) and the tables that take them, as kohya's config_util: ``dataset`` keys sit in
``[general]`` and ``[[datasets]]``; ``subset`` keys in every table (a subset inherits them); ``subset_only``
keys only in ``[[datasets.subsets]]``.
"""

from __future__ import annotations

import dataclasses
from types import MappingProxyType
from typing import Any, Dict, Mapping, Tuple

from ..vocabulary import SUBSET_LAYOUTS
from .definitions import MAX_REPEATS, OPTIONS
from .schema import ConversionError, Option, format_value

TABLES = ("general", "datasets", "subsets")
LEVELS_OF_TABLE = MappingProxyType({
    "general": ("dataset", "subset"),
    "datasets": ("dataset", "subset"),
    "subsets": ("subset", "subset_only"),
})
_D = "dataset"
# keys of a dataset file that are no command-line option
FILE_ONLY = (
    Option("image_dir", "path", None, "The subset's image folder.", _D, level="subset_only"),
    Option("is_reg", "bool", False, "The subset holds regularisation (class) images.", _D, level="subset_only"),
    Option("metadata_file", "path", None, "kohya fine-tuning metadata JSON of the subset (the file's in_json).", _D,
           level="subset_only"),
    Option("class_tokens", "str", None, "Caption of the subset's images that have no caption file.", _D,
           level="subset"),
    Option("layout", "str", "auto", "How the subset's folder is laid out (ours).", _D, choices=SUBSET_LAYOUTS,
           ours=True, level="subset"),
    Option("recursive", "bool", False, "Also read images in subfolders of image_dir (ours).", _D, ours=True,
           level="subset"),
    Option("network_multiplier", "float", 1.0, "kohya's per-dataset LoRA strength; not implemented.", _D,
           status="ignored", level="dataset"),
    Option("custom_attributes", "str", None, "kohya's free per-subset attributes; not used.", _D, status="ignored",
           level="subset"),
    Option("sample_ratio", "float", None, "kohya's per-subset sampling ratio; not implemented.", _D,
           status="ignored", level="subset"),
)
# run options that old kohya dataset files carry (kohya's argparse-only dataset params): a warning, not an error
TOLERATED_RUN_KEYS = ("max_token_length",)


def _file_keys() -> Dict[str, Option]:
    """File key -> its option; a renamed option appears under its file name (so messages say batch_size)."""
    keys = {o.config_key: dataclasses.replace(o, name=o.config_key, dataset_key=None) if o.dataset_key else o
            for o in OPTIONS if o.level != "run"}
    keys.update({o.name: o for o in FILE_ONLY})
    # in a file, 0 repeats switches a subset off (kohya); on the command line dataset_repeats is at least 1
    keys["num_repeats"] = dataclasses.replace(
        keys["num_repeats"], min=0, max=MAX_REPEATS,
        help="How often the subset's images are repeated per epoch; 0 leaves the subset out.")
    return keys


KEYS: Mapping[str, Option] = MappingProxyType(_file_keys())
# command-line name -> file key where they differ (train_batch_size -> batch_size)
CLI_TO_FILE = MappingProxyType({o.name: o.config_key for o in OPTIONS if o.level != "run" and o.dataset_key})


def keys_of(table: str) -> Dict[str, Option]:
    """The keys ``table`` (general, datasets, subsets) takes, by file name."""
    levels = LEVELS_OF_TABLE[table]
    return {key: o for key, o in KEYS.items() if o.level in levels}


def is_ignored(key: str) -> bool:
    """A kohya key lorasmith accepts anywhere in the file but does not implement (a warning says so)."""
    option = KEYS.get(key)
    return key in TOLERATED_RUN_KEYS or (option is not None and option.status == "ignored")


def params_fields(*levels: str) -> Tuple[Tuple[str, Option], ...]:
    """(file key, option) of the implemented keys at ``levels``: the fields of the data layer's parameter classes."""
    return tuple((key, o) for key, o in KEYS.items() if o.level in levels and o.status == "supported")


_FILE_TYPES = {"bool": (bool,), "int": (int,), "float": (int, float), "int_or_float": (int, float),
               "str": (str,), "path": (str,)}


def file_value(key: str, value: Any) -> Any:
    """A value read from a dataset file, checked as kohya's schema does (a TOML integer for an int key, no
    quoted numbers) and against the option's choices and range; ConversionError says why not."""
    option = KEYS[key]
    kinds = _FILE_TYPES.get(option.type)
    if kinds is not None and (not isinstance(value, kinds) or (isinstance(value, bool) and option.type != "bool")):
        raise ConversionError(f"must be {option.expected()}, got {value!r}")
    return checked_value(key, value)


def checked_value(key: str, value: Any) -> Any:
    """A dataset key's value converted by its schema entry (sizes, choices) and range-checked."""
    return checked_option(KEYS[key], value)


def checked_option(option: Option, value: Any) -> Any:
    """``value`` converted by the option's schema entry (sizes, choices) and range-checked; ConversionError if not.
    Text and paths pass as they are (Python callers may give Path objects)."""
    if value is None:
        return None
    if option.type in ("str", "path") and not option.choices:
        out = value
    else:
        out = option.from_value(value)
    problem = option.range_error(out)
    if problem:
        raise ConversionError(f"{problem}, got {format_value(out)}")
    return out
