"""A new run's options from a LoRA file's kohya ``ss_*`` metadata ("new run from this LoRA").

Why: users want to repeat or vary a run they only have the LoRA of; kohya writes its settings into the
file. Each value goes through the option schema's own conversion; what does not convert is listed,
not guessed.
"""

from __future__ import annotations

import json

from library.options import BY_NAME

from .forms import form_value

# ss_ key -> option name, where the names differ (the rest: ss_<option name>)
_RENAMED = {"ss_num_epochs": "max_train_epochs", "ss_debiased_estimation": "debiased_estimation_loss"}
_SKIP = {"ss_num_epochs", "ss_sd_model_name"}  # kohya writes both steps and epochs; steps are exact. The model: a hint


def read_metadata(path: str) -> dict:
    from safetensors import safe_open

    with safe_open(path, "pt") as f:
        return dict(f.metadata() or {})


def _optimizer(text: str) -> dict:
    """kohya's ss_optimizer "package.module.Name(k=v,k=v)" -> optimizer_type and optimizer_args."""
    name, _, rest = text.partition("(")
    out = {"optimizer_type": name.rsplit(".", 1)[-1]}
    args = [a.strip() for a in rest.rstrip(")").split(",") if "=" in a]
    if args:
        out["optimizer_args"] = args
    return out


def settings_from_metadata(md: dict) -> dict:
    """{"values": form values, "ignored": [ss_ keys not used], "model_hint": base model file name}."""
    raw: dict = {}
    ignored = []
    for key, text in md.items():
        if not key.startswith("ss_") or key in _SKIP or text in (None, "", "None"):
            continue
        if key == "ss_optimizer":
            raw.update(_optimizer(text))
            continue
        if key == "ss_network_args":
            try:
                raw["network_args"] = [f"{k}={v}" for k, v in json.loads(text).items()]
            except (ValueError, AttributeError):
                ignored.append(key)
            continue
        if key == "ss_resolution":
            raw["resolution"] = text.strip("()").replace(" ", "")
            continue
        name = _RENAMED.get(key, key[3:])
        if name in BY_NAME and not BY_NAME[name].cli_only:
            raw[name] = text
        else:
            ignored.append(key)
    values = {}
    for name, text in raw.items():
        option = BY_NAME[name]
        try:
            value = option.from_value(text.lower() if option.type == "bool" and isinstance(text, str) else text)
        except ValueError:
            ignored.append(f"ss_{name}")
            continue
        if value != option.default:
            values[name] = form_value(name, value)
    return {"values": values, "ignored": sorted(ignored), "model_hint": md.get("ss_sd_model_name")}
