"""The ``Option`` record and value conversion shared by the command line, config files and docs.

Why: one description per option (name, type, default, help, group, limits) is the only place a
setting is defined; argparse flags, ``--config_file`` TOML keys, validation and docs/options.md are
all derived from it, so they cannot disagree.

Types (``Option.type``):
- ``str`` / ``path``: text (``path`` only changes how docs and path checks treat it)
- ``int``, ``float``, ``bool`` (a kohya-style ``store_true`` flag on the command line)
- ``int_or_float``: ``100`` is a step count, ``0.1`` a fraction (kohya's ``lr_warmup_steps``)
- ``size``: ``512`` or ``512,768`` (width,height); always becomes a ``(width, height)`` tuple
``nargs="*"`` makes a list of that type (``--network_args a=1 b=2``; in TOML an array).

``level`` says whether a dataset_config TOML may set the option too, and in which tables (``LEVELS``;
library/options/dataset_keys.py turns the levels into the tables' keys); ``dataset_key`` is its name there
when kohya renamed it (``train_batch_size`` is ``batch_size``). The GUI's forms read group, help and level.

Numbers are finite: ``nan``, ``inf`` and ``1e999`` are refused for every float option (a NaN learning
rate trains a LoRA full of NaN, a NaN ``max_grad_norm`` turns clipping off) unless the option sets
``finite=False`` because infinity means something there. Every float option states its range
(``min``/``gt``/``max``) or says ``unbounded=True`` (any finite number); tests/options/test_values.py
checks that every supported one does.
"""

from __future__ import annotations

import difflib
import math
from dataclasses import dataclass
from typing import Any, Optional, Tuple

SCRIPTS = ("train_network", "sdxl_train_network")
SD_ONLY = ("train_network",)
SDXL_ONLY = ("sdxl_train_network",)

# group key -> title, in the order of --help and docs/options.md
GROUPS = {
    "model": "Model",
    "dataset": "Dataset",
    "network": "Network",
    "optimizer": "Optimizer and learning rate",
    "training": "Training",
    "precision": "Precision and memory",
    "saving": "Saving and resuming",
    "sampling": "Sample images",
    "logging": "Logging and metadata",
    "sdxl": "SDXL",
    "noise_loss": "Noise and loss",
    "misc": "Distributed and misc",
}
TYPES = ("str", "path", "int", "float", "bool", "int_or_float", "size")
# supported: the trainer honours it. ignored: accepted for kohya compatibility, a notice says it does
# nothing. unsupported: accepted by name, but a non-default value is an error saying what to do instead.
STATUSES = ("supported", "ignored", "unsupported")
# Where a dataset_config TOML may set the option (kohya's config_util: "ascendable" keys may sit in any table
# above the subset, "distinct" ones only in the subset). run: a training option only (command line and
# --config_file); dataset: also in [general] and [[datasets]]; subset: also in [general], [[datasets]] and
# [[datasets.subsets]], inherited downwards; subset_only: only inside [[datasets.subsets]].
LEVELS = ("run", "dataset", "subset", "subset_only")

_EXPECTED = {
    "str": ("a string", '"text"'),
    "path": ("a path string", '"folder/file"'),
    "int": ("an integer", "10"),
    "float": ("a number", "0.0001"),
    "bool": ("true or false", "true"),
    "int_or_float": ("a step count or a fraction of all steps", "100 or 0.05 or \"5%\""),
    "size": ("a size like 512 or \"512,768\" (width,height)", "512"),
}


class ConversionError(ValueError):
    """A value of the wrong type; ``str(e)`` reads 'must be ..., got ...'."""


@dataclass(frozen=True)
class Option:
    """One option. ``help`` is a short English sentence; ``ours`` marks options kohya does not have."""

    name: str
    type: str
    default: Any
    help: str
    group: str
    choices: Optional[Tuple[Any, ...]] = None
    nargs: Optional[str] = None
    min: Optional[float] = None  # inclusive
    max: Optional[float] = None  # inclusive
    gt: Optional[float] = None  # exclusive lower bound ("positive" is gt=0)
    lt: Optional[float] = None  # exclusive upper bound (a fraction "below 1" is lt=1)
    scripts: Tuple[str, ...] = SCRIPTS
    status: str = "supported"
    ours: bool = False
    alias_of: Optional[str] = None  # old spelling kept for kohya files (caption_extention)
    cli_only: bool = False  # config_file, output_config: meaningless inside a config file
    metavar: Optional[str] = None
    finite: bool = True  # float options: nan/inf refused (False only where infinity means something)
    unbounded: bool = False  # float options with no range on purpose: any finite number
    level: str = "run"  # which dataset_config tables take it (LEVELS)
    dataset_key: Optional[str] = None  # its name in a dataset_config when that differs (batch_size)

    def __post_init__(self) -> None:
        problems = []
        if self.type not in TYPES:
            problems.append(f"type {self.type!r} not in {TYPES}")
        if self.group not in GROUPS:
            problems.append(f"group {self.group!r} not in GROUPS")
        if self.status not in STATUSES:
            problems.append(f"status {self.status!r} not in {STATUSES}")
        if self.level not in LEVELS:
            problems.append(f"level {self.level!r} not in {LEVELS}")
        if self.nargs not in (None, "*"):
            problems.append("nargs must be None or '*'")
        if self.type == "bool" and (self.default is not False or self.nargs):
            problems.append("a bool option is a flag with default False")
        if not self.help.strip():
            problems.append("help is empty")
        if any(s not in SCRIPTS for s in self.scripts) or not self.scripts:
            problems.append(f"scripts {self.scripts!r} must be a non-empty subset of {SCRIPTS}")
        if problems:
            raise ValueError(f"option {self.name}: " + "; ".join(problems))

    # --- descriptions -------------------------------------------------------------------------
    @property
    def config_key(self) -> str:
        """The option's key in a dataset_config TOML (kohya renames two: batch_size, num_repeats)."""
        return self.dataset_key or self.name

    @property
    def is_flag(self) -> bool:
        return self.type == "bool"

    def for_script(self, script: str) -> bool:
        return script in self.scripts

    def type_label(self) -> str:
        """Short type name for docs: ``int``, ``float list``, ``flag``, ``int or float``..."""
        label = {"bool": "flag", "int_or_float": "int or float", "size": "size"}.get(self.type, self.type)
        return label + " list" if self.nargs else label

    def expected(self, example: bool = True) -> str:
        """What a valid value looks like, for error messages (``example``: add a TOML line)."""
        what, sample = _EXPECTED[self.type]
        if self.choices:
            what = "one of " + ", ".join(_show(c) for c in self.choices)
            sample = _show(self.choices[0])
        if self.nargs and example:
            what = f"a list of {_plural(what)}"
            sample = f"[{sample}]"
        return f"{what} (like {self.name} = {sample})" if example else what

    # --- conversion ---------------------------------------------------------------------------
    def from_text(self, text: str) -> Any:
        """One command-line word -> a value (one element for list options)."""
        return self._element(text, from_text=True)

    def from_value(self, value: Any) -> Any:
        """A config-file (TOML) or Python value -> the option's value (a list for nargs options)."""
        if value is None:
            return None
        if isinstance(value, str) and value == "" and self.default is None:
            return None  # GUIs write "" for "not set"
        if self.nargs:
            items = list(value) if isinstance(value, (list, tuple)) else [value]
            return [self._element(v, from_text=False) for v in items]
        if isinstance(value, (list, tuple)) and self.type != "size":
            raise ConversionError(f"must be {self.expected()}, got a list")
        return self._element(value, from_text=False)

    def _element(self, value: Any, from_text: bool) -> Any:
        kind = self.type
        try:
            if kind in ("str", "path"):
                if not isinstance(value, str):
                    raise ValueError
                out = value
            elif kind == "bool":
                out = _to_bool(value)
            elif kind == "int":
                out = _to_int(value)
            elif kind == "float":
                out = _to_float(value)
            elif kind == "int_or_float":
                out = _to_int_or_float(value)
            else:
                out = parse_size(value)
        except (TypeError, ValueError):
            raise ConversionError(f"must be {self.expected(example=not from_text)}, got {value!r}") from None
        if self.finite and not is_finite(out):
            raise ConversionError(f"must be {FINITE}, got {value!r}")
        return self._check_choice(out)

    def _check_choice(self, value: Any) -> Any:
        if not self.choices or value is None:
            return value
        if value in self.choices:
            return value
        if isinstance(value, str):
            for choice in self.choices:
                if isinstance(choice, str) and choice.lower() == value.lower():
                    return choice
        names = [str(c) for c in self.choices]
        near = difflib.get_close_matches(str(value), names, 1, 0.6)
        hint = f"; did you mean {near[0]!r}?" if near else ""
        raise ConversionError(f"must be one of {', '.join(names)}, got {value!r}{hint}")

    def range_error(self, value: Any) -> Optional[str]:
        """'must be at least 1' when ``value`` (or an element of it) is out of range, else None."""
        if value is None:
            return None
        items = value if isinstance(value, (list, tuple)) else [value]
        for x in items:
            if isinstance(x, bool) or not isinstance(x, (int, float)):
                continue
            if self.finite and not math.isfinite(x):
                return f"must be {FINITE}"
            for field, _, words, holds in BOUNDS:
                bound = getattr(self, field)
                if bound is not None and not holds(x, bound):
                    return f"must be {words} {_show(bound)}"
        return None

    def bounds(self) -> list:
        """The option's range as (symbol, bound) pairs, in BOUNDS order: ``[(">", 0), ("<=", 1)]``."""
        return [(symbol, getattr(self, field)) for field, symbol, _, _ in BOUNDS if getattr(self, field) is not None]


# an Option's range fields: (field, symbol in docs, words in errors, the test a value must pass)
BOUNDS = (
    ("gt", ">", "greater than", lambda x, b: x > b),
    ("min", ">=", "at least", lambda x, b: not x < b),  # (written so, a NaN passes min/max as before)
    ("max", "<=", "at most", lambda x, b: not x > b),
    ("lt", "<", "below", lambda x, b: x < b),
)


FINITE = "a finite number (not nan or inf)"


def is_finite(value: Any) -> bool:
    """False when ``value`` is, or holds (lists, tuples, dict values), a NaN or infinite number."""
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, (list, tuple, set)):
        return all(is_finite(v) for v in value)
    if isinstance(value, dict):
        return all(is_finite(v) for v in value.values())
    return True


def finite_float(text: str) -> float:
    """argparse ``type=`` for the tools' float arguments: nan/inf are refused with the option named."""
    import argparse

    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be {FINITE}, got {text!r}")
    return value


def parse_size(value: Any) -> Tuple[int, int]:
    """512, "512", "512,768", [512, 768] -> (width, height). ValueError otherwise."""
    if isinstance(value, bool):
        raise ValueError(value)
    if isinstance(value, (int, float)):
        parts = [_to_int(value)]  # 512.0 is 512; 512.7 is an error, never truncated
    elif isinstance(value, str):
        parts = [int(p.strip()) for p in value.split(",")]  # "512," is an error
    elif isinstance(value, (list, tuple)):
        parts = [_to_int(p) for p in value]
    else:
        raise ValueError(value)
    if len(parts) == 1:
        parts = parts * 2
    if len(parts) != 2:
        raise ValueError(value)
    return parts[0], parts[1]


def format_value(value: Any) -> str:
    """A value as a user would type it (docs and messages)."""
    if value is None:
        return "—"
    if isinstance(value, tuple) and len(value) == 2:
        return f"{value[0]},{value[1]}" if value[0] != value[1] else str(value[0])
    if isinstance(value, (list, tuple)):
        return " ".join(format_value(v) for v in value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    return _show(value)


def _show(x: Any) -> str:
    if isinstance(x, float) and x.is_integer() and abs(x) < 1e15:
        return str(int(x)) if abs(x) >= 1 or x == 0 else repr(x)
    if isinstance(x, str):
        return f'"{x}"'
    return str(x)


def _plural(what: str) -> str:
    for article in ("an ", "a "):
        if what.startswith(article):
            return what[len(article):] + "s"
    return what


def _to_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise ValueError(value)


def _to_int(value: Any) -> int:
    if isinstance(value, bool):
        raise ValueError(value)
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        return int(value.strip())
    raise ValueError(value)


def _to_float(value: Any) -> float:
    if isinstance(value, bool):
        raise ValueError(value)
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        return float(value.strip())
    raise ValueError(value)


def _to_int_or_float(value: Any):
    if isinstance(value, bool):
        raise ValueError(value)
    if isinstance(value, (int, float)):
        return value
    if isinstance(value, str):
        text = value.strip()
        if text.endswith("%"):
            return float(text[:-1]) / 100.0  # "10%" = 0.1 of all steps
        try:
            return int(text)
        except ValueError:
            return float(text)
    raise ValueError(value)
