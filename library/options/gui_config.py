"""What the kohya_ss GUI writes into a ``--config_file`` that is not a plain trainer option.

Why: the GUI (bmaltais/kohya_ss, ``kohya_gui/lora_gui.py``) saves one TOML per run and starts
``train_network.py --config_file`` on it; sd-scripts ignores keys it does not know. A GUI config must
train here unchanged, so this module owns the GUI's habits:

- GUI-only keys (``epoch``, ``noise_offset_type`` ...) are accepted; the ones that mean something are
  translated (``epoch`` -> ``max_train_epochs`` when that is absent, ``noise_offset_type`` selects
  original or multires noise), and all of them are reported in one notice.
- ``1``/``0`` for a flag, ``""`` for "not set" and ``[]`` for an empty list are read as the GUI means them.
- Any other unknown key is ignored with a warning (as sd-scripts ignores it), unless it is one edit away
  from a real option (one character added, dropped, changed, or two neighbours swapped): that is a typo
  that would silently change the run, so it stays an error.
"""

from __future__ import annotations

import difflib
from typing import Any, Dict, List, Mapping

from ..errors import UserError
from .definitions import BY_NAME, OPTIONS
from .schema import Option

# GUI-only keys the kohya_ss LoRA tab writes (v24.1.x, v25.x, current), and what they mean here.
GUI_ONLY_KEYS = {
    "epoch": "the GUI's epoch count; used as max_train_epochs when that is not set",
    "noise_offset_type": "the GUI's noise kind (\"Original\" or \"Multires\"); selects which noise settings apply",
    "lowvram": "a GUI switch sd-scripts has no option for; nothing to do here",
    "stop_text_encoder_training": "a DreamBooth-tab setting train_network.py ignores (kohya too)",
    "train_inpainting": "a GUI switch train_network.py ignores (kohya too)",
    "no_token_padding": "a DreamBooth-tab setting train_network.py ignores (kohya too)",
}
NOISE_KINDS = {
    "original": ("noise_offset", "noise_offset_random_strength", "adaptive_noise_scale"),
    "multires": ("multires_noise_iterations", "multires_noise_discount"),
}


def coerce_gui_value(option: Option, value: Any) -> Any:
    """A GUI-style value read as the GUI means it: ``1``/``0`` flags, ``""`` unset, ``[]`` empty."""
    if option.type == "bool" and not option.nargs and isinstance(value, int) and not isinstance(value, bool):
        if value in (0, 1):
            return bool(value)
        return value  # 2 is not a flag value: the normal conversion error names it
    if isinstance(value, str) and value == "" and option.type not in ("str", "path"):
        return None if option.default is None else option.default
    if isinstance(value, list) and not value and not option.nargs:
        return None if option.default is None else option.default
    return value


def unknown_key_warning(key: str, where: str, script: str) -> str:
    """The warning for a key that is no option; raises ``UserError`` when it is a one-edit typo."""
    names = [o.name for o in OPTIONS if o.for_script(script) and not o.cli_only]
    typo = next((n for n in names if one_edit_apart(key, n)), None)
    if typo is not None:
        raise UserError(f"unknown key {key!r} in {where}; did you mean {typo!r}?")
    near = difflib.get_close_matches(key, names, 1, 0.75)
    hint = f" (did you mean {near[0]!r}?)" if near else ""
    return f"unknown key {key!r} in {where} is ignored, as kohya does{hint}"


def apply_gui_keys(gui: Mapping[str, Any], gui_sources: Mapping[str, str], values: Dict[str, Any],
                   sources: Dict[str, str], path: str) -> List[str]:
    """Translate the GUI-only keys into options (in place); return the one notice that lists them."""
    if not gui:
        return []
    effects = []
    if "epoch" in gui:
        effects.append(_apply_epoch(gui["epoch"], gui_sources["epoch"], values, sources))
    if "noise_offset_type" in gui:
        effects.append(_apply_noise_kind(gui["noise_offset_type"], gui_sources["noise_offset_type"], values,
                                         sources))
    for key in gui:
        if key not in ("epoch", "noise_offset_type"):
            effects.append(f"{key}: {GUI_ONLY_KEYS[key]}")
    return [f"{path} is a kohya_ss GUI config; its GUI-only keys are read as the GUI means them: "
            + "; ".join(e for e in effects if e)]


def _apply_epoch(value: Any, where: str, values: Dict[str, Any], sources: Dict[str, str]) -> str:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise UserError(f"epoch in {where} must be a whole number of epochs (like epoch = 10), got {value!r}")
    if value == 0:
        return "epoch = 0: unset"
    if values.get("max_train_epochs") is not None:
        return f"epoch = {value}: max_train_epochs {values['max_train_epochs']} is set and wins"
    values["max_train_epochs"] = value
    sources["max_train_epochs"] = f"{where} (epoch)"
    return f"epoch = {value}: max_train_epochs = {value}"


def _apply_noise_kind(value: Any, where: str, values: Dict[str, Any], sources: Dict[str, str]) -> str:
    kind = value.strip().lower() if isinstance(value, str) else None
    if kind not in NOISE_KINDS:
        raise UserError(f"noise_offset_type in {where} must be \"Original\" or \"Multires\", got {value!r}")
    dropped = []
    for other, names in NOISE_KINDS.items():
        if other == kind:
            continue
        for name in names:
            if name in values:
                if values[name] and values[name] != BY_NAME[name].default:  # "off" or a default: no mention
                    dropped.append(name)
                del values[name]
                sources.pop(name, None)
    what = "offset noise" if kind == "original" else "multires (pyramid) noise"
    tail = f", so {', '.join(dropped)} {'is' if len(dropped) == 1 else 'are'} not used" if dropped else ""
    return f"noise_offset_type = {value!r}: {what}{tail}"


def one_edit_apart(a: str, b: str) -> bool:
    """True when ``a`` becomes ``b`` by one inserted, deleted or changed character, or two neighbours swapped
    (the typing slips; not when equal)."""
    if a == b or abs(len(a) - len(b)) > 1:
        return False
    if len(a) == len(b):
        diff = [i for i, (x, y) in enumerate(zip(a, b)) if x != y]
        swapped = len(diff) == 2 and diff[1] == diff[0] + 1 and a[diff[0]] == b[diff[1]] and a[diff[1]] == b[diff[0]]
        return len(diff) == 1 or swapped
    short, long_ = (a, b) if len(a) < len(b) else (b, a)
    i = 0
    while i < len(short) and short[i] == long_[i]:
        i += 1
    return short[i:] == long_[i + 1:]
