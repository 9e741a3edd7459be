"""``key=value`` list options (network_args, optimizer_args, lr_scheduler_args): syntax checks and network kwargs.

Why: kohya passes these lists straight to the network factory, the optimizer and the scheduler; a
malformed entry then fails deep inside training, and a misspelt network key (``conv_dims=8``) is
silently ignored. Checking them here catches both before any model loads. This module is the one
reader of such lists: it splits entries (one string may hold several: ``"weight_decay=0.01
decouple=True"``, as GUIs write them), reads optimizer/scheduler values as Python literals
(``parse_key_values``) and builds the string kwargs ``networks.lora`` takes.
"""

from __future__ import annotations

import ast
import difflib
import importlib.util
import math
import re
from typing import Any, Dict, Iterable, Mapping, Optional

from ..errors import UserError
from .definitions import BY_NAME, OWN_NETWORK_ARG_KEYS
from .schema import FINITE, is_finite

LORAPLUS_KEYS = ("loraplus_lr_ratio", "loraplus_unet_lr_ratio", "loraplus_text_encoder_lr_ratio")
_NETWORK_NUMBERS = {  # key -> (type, min, max) checked when present
    "conv_dim": (int, 1, None),
    "conv_alpha": (float, 0, None),
    "rank_dropout": (float, 0, 1),
    "module_dropout": (float, 0, 1),
    "block_lr_zero_threshold": (float, None, None),
    "unit": (int, 1, None),
}
_NETWORK_FLAGS = ("enable_all_linear", "enable_conv")
_ENTRY_START = re.compile(r"(?:^|(?<=\s))([A-Za-z_]\w*)\s*=")


def split_key_values(items: Optional[Iterable[str]], option: str) -> Dict[str, str]:
    """["a=1", "b=x c=2"] -> {"a": "1", "b": "x", "c": "2"} (values stay text).

    A new entry starts at the beginning or where whitespace is followed by ``name=``; other text
    continues the previous value (``"betas=0.9, 0.999"``). UserError names a bad or repeated entry, and
    a value that is or holds nan/inf (``loraplus_lr_ratio=nan``, ``betas=0.9,inf``): whatever network,
    optimizer or scheduler reads the key, a non-finite number only ever turns into NaN weights.
    """
    out: Dict[str, str] = {}
    for item in items or ():
        text = str(item).strip()
        starts = [m.start() for m in _ENTRY_START.finditer(text)]
        if not starts or starts[0] != 0:
            raise UserError(f"{option} entry {item!r} is not key=value; write it like {_example(option)}")
        for a, b in zip(starts, starts[1:] + [len(text)]):
            key, _, value = text[a:b].partition("=")
            key = key.strip()
            if key in out:
                raise UserError(f"{option} sets {key!r} twice ({key}={out[key]} and {key}={value.strip()}); keep one")
            out[key] = value.strip()
            if not value_is_finite(out[key]):
                raise UserError(f"{option} {key}={out[key]}: the value must be {FINITE}")
    return out


def value_is_finite(text: str) -> bool:
    """False when a key=value text is a non-finite number or a list holding one ("nan", "0.9,inf", "1e999")."""
    if not is_finite(literal_value(text)):
        return False
    for part in re.split(r"[\s,()\[\]]+", text):
        try:
            if not math.isfinite(float(part)):
                return False
        except ValueError:
            continue
    return True


_WORDS = {"true": True, "false": False, "none": None}


def literal_value(text: str) -> Any:
    """A Python literal (``0.01``, ``False``, ``[0.9, 0.99]``, ``0.9,0.99`` -> tuple); true/false/none in any
    case; ``a,b`` with parts that are not literals -> a tuple of each part read alone; else the text."""
    if "," not in text:
        return _word(text)
    try:
        return ast.literal_eval(text)
    except _NOT_A_LITERAL:  # e.g. "0.9,true" or "a,b": each part on its own, as a tuple (kohya: literal_eval tuple)
        return tuple(_word(part) for part in text.split(","))


_NOT_A_LITERAL = (ValueError, SyntaxError, TypeError, MemoryError, RecursionError)


def _word(text: str) -> Any:
    """One value: a Python literal, true/false/none in any case, else the stripped text."""
    try:
        return ast.literal_eval(text)
    except _NOT_A_LITERAL:
        lowered = text.strip().lower()
        return _WORDS[lowered] if lowered in _WORDS else text.strip()


def parse_key_values(args: Any, option: str) -> Dict[str, Any]:
    """kohya's ``--optimizer_args "weight_decay=0.01" "betas=0.9,0.999"`` (and ``--lr_scheduler_args``) ->
    ``{"weight_decay": 0.01, "betas": (0.9, 0.999)}``: entries split as ``split_key_values`` splits them,
    each value read by ``literal_value``. A mapping (from a TOML config) is taken as already parsed; its
    keys must be argument names and its values finite."""
    if args is None:
        return {}
    if isinstance(args, Mapping):
        bad = [k for k in args if not isinstance(k, str) or not k.isidentifier()]
        if bad:
            raise UserError(f"{option} key {bad[0]!r} is not a valid argument name; use names like weight_decay")
        for key, value in args.items():
            if not is_finite(value) or (isinstance(value, str) and not value_is_finite(value)):
                raise UserError(f"{option} {key}={value}: the value must be {FINITE}")
        return dict(args)
    items = [args] if isinstance(args, str) else list(args)
    for raw in items:
        if not isinstance(raw, str):
            raise UserError(f"{option} entry {raw!r} is not a string; write it like {_example(option)}")
    texts = split_key_values([raw for raw in items if raw.strip()], option)
    for key, text in texts.items():
        if not text:
            raise UserError(f"{option} entry '{key}=' has no value after '='; write it like \"{key}=0.01\"")
    return {key: literal_value(text) for key, text in texts.items()}


def network_kwargs(args) -> Dict[str, str]:
    """``--network_args`` plus the top-level LoRA+ options, as the string kwargs networks.lora takes.

    Unknown keys and bad numbers are UserErrors with a suggestion; a LoRA+ ratio given both ways
    with different values is an error.
    """
    kwargs = split_key_values(args.network_args, "network_args")
    module = getattr(args, "network_module", None) or BY_NAME["network_module"].default
    known = OWN_NETWORK_ARG_KEYS.get(module)
    for key, value in kwargs.items():
        if known is None:
            continue  # another module's network_args: it reads (and checks) them itself, as in kohya
        if key not in known:
            near = difflib.get_close_matches(key, known, 1, 0.6)
            hint = f"did you mean {near[0]!r}?" if near else "known keys: " + ", ".join(known)
            raise UserError(f"network_args has unknown key {key!r} ({key}={value}) for {module}; {hint}")
        if value in ("", "None"):
            continue
        if key in _NETWORK_NUMBERS:
            _check_number(key, value)
        elif key in _NETWORK_FLAGS and value.strip().lower() not in ("true", "false", "1", "0"):
            raise UserError(f"network_args {key}={value}: use True or False")
        elif key in LORAPLUS_KEYS and _number(key, value, float) <= 0:
            raise UserError(f"network_args {key}={value}: the value must be greater than 0")
    for key in LORAPLUS_KEYS:
        top = getattr(args, key)
        if top is None:
            continue
        if kwargs.get(key) not in (None, "", "None") and float(kwargs[key]) != float(top):
            raise UserError(f"{key} is {top} but network_args says {key}={kwargs[key]}; set it in one place only")
        if known is not None and key not in known:
            raise UserError(f"{key}: {module} has no LoRA+ (it has no up/down weights); leave {key} out")
        kwargs[key] = str(top)
    return kwargs


_DOTTED = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")
_INSTALL_HINTS = {"lycoris": "pip install lycoris-lora (LyCORIS: algo=locon/loha/lokr/ia3/dylora/glora/full/diag-oft/boft)"}


def check_network_module(name: str) -> None:
    """UserError unless ``network_module`` is a dotted module name that is installed (nothing is imported
    but its parent packages), so a typo costs seconds, not a model load."""
    own = ", ".join(OWN_NETWORK_ARG_KEYS)
    if not name or not _DOTTED.match(name):
        raise UserError(f"network_module {name!r} is not a Python module name; use one of {own}, or e.g. lycoris.kohya")
    try:
        found = importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        found = False
    if not found:
        hint = _INSTALL_HINTS.get(name.split(".")[0], f"use one of {own}, or install the package that provides it")
        raise UserError(f"network_module {name}: no such module is installed; {hint}")


def _number(key: str, text: str, kind):
    try:
        return kind(text)
    except ValueError:
        what = "an integer" if kind is int else "a number"
        raise UserError(f"network_args {key}={text}: the value must be {what}") from None


def _check_number(key: str, text: str) -> None:
    kind, low, high = _NETWORK_NUMBERS[key]
    number = _number(key, text, kind)
    if (low is not None and number < low) or (high is not None and number > high):
        limits = f"between {low} and {high}" if high is not None else f"at least {low}"
        raise UserError(f"network_args {key}={text}: the value must be {limits}")


def _example(option: str) -> str:
    return {
        "network_args": "conv_dim=4",
        "optimizer_args": "weight_decay=0.01",
        "lr_scheduler_args": "T_max=100",
    }.get(option.lstrip("-"), "key=value")
