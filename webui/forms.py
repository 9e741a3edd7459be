"""The option schema as form fields, and form values checked by library.options (not a copy of its rules).

Why: the Configure page must offer every option with kohya's names, types, defaults, help, groups
and limits, and refuse what the CLI would refuse; both come from library/options, so a new option
or rule shows up in the page without touching the GUI.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

from library.errors import UserError
from library.options import BY_NAME, GROUPS, check_paths, config_text, namespace_from, notices, options_for, read_config_file

from .paths import PathRefused, Roots

REPO = Path(__file__).resolve().parent.parent
PRESETS = REPO / "presets"
# The options the basic view shows; every other one is under "advanced".
BASIC = (
    "pretrained_model_name_or_path", "train_data_dir", "reg_data_dir", "resolution", "enable_bucket", "caption_extension",
    "network_dim", "network_alpha", "optimizer_type", "learning_rate", "lr_scheduler", "train_batch_size",
    "max_train_steps", "max_train_epochs", "mixed_precision", "seed", "output_dir", "output_name",
    "save_every_n_steps", "save_every_n_epochs", "sample_prompts", "sample_every_n_steps", "sample_sampler",
)
_WORD = re.compile(r"[a-z][a-z0-9_]+")


def _json_value(value):
    if isinstance(value, tuple):
        return list(value)
    return value


def schema(script: str = "train_network") -> dict:
    """Every option ``script`` accepts, grouped, as JSON for the form builder."""
    fields = []
    for o in options_for(script):
        if o.cli_only or o.alias_of:
            continue
        fields.append({
            "name": o.name, "type": o.type, "label": o.type_label(), "default": form_value(o.name, o.default),
            "help": o.help, "group": o.group, "choices": list(o.choices) if o.choices else None, "list": bool(o.nargs),
            "min": o.min, "max": o.max, "gt": o.gt, "status": o.status, "ours": o.ours, "basic": o.name in BASIC,
        })
    return {"script": script, "groups": [{"key": k, "title": t} for k, t in GROUPS.items()], "fields": fields}


def form_value(name: str, value):
    """A converted option value as the form shows it (sizes as "512" or "512,768")."""
    option = BY_NAME.get(name)
    if option is not None and option.type == "size" and isinstance(value, (tuple, list)) and not option.nargs:
        return str(value[0]) if value[0] == value[1] else f"{value[0]},{value[1]}"
    return _json_value(value)


def clean(values: dict) -> dict:
    """Drop unset fields ("" / None / empty lists): the option's default applies."""
    return {k: v for k, v in values.items() if v is not None and v != "" and v != [] and v is not False}


def resolve_paths(values: dict, roots: Roots) -> dict:
    """Path options resolved inside the root (absolute); a path outside it is a UserError naming the option."""
    out = dict(values)
    for name, value in values.items():
        option = BY_NAME.get(name)
        if option is None or option.type != "path" or value in (None, ""):
            continue
        try:
            out[name] = [str(roots.resolve(v)) for v in value] if isinstance(value, list) else str(roots.resolve(value))
        except PathRefused as e:
            raise UserError(f"{name}: {e}") from None
    return out


def field_of(message: str, values: dict) -> str | None:
    """The option a validation message is about (the first option name in it), for showing it at the field."""
    names = [w for w in _WORD.findall(message) if w in BY_NAME]
    given = [n for n in names if n in values]
    return (given or names or [None])[0]


def check(values: dict, script: str, roots: Roots, files: bool = True):
    """(namespace, resolved values) or UserError: the CLI's own validation of the form's values."""
    resolved = resolve_paths(clean(values), roots)
    args = namespace_from(resolved, script, source="the form")
    if files:
        check_paths(args, {k: "the form" for k in resolved})
    return args, resolved


def report(values: dict, script: str, roots: Roots) -> dict:
    """What the page shows under the form: ok/error (+ field), notices, the equivalent CLI and TOML."""
    values = clean(values)
    out = {"ok": True, "error": None, "field": None, "notices": [], "cli": cli_text(values, script), "toml": ""}
    try:
        args, _ = check(values, script, roots)
        out["notices"] = notices(args, script)
        converted = {k: getattr(args, k) for k in values if hasattr(args, k)}
        # paths as the user typed them (relative to the root), so the TOML works where it is used
        converted.update({k: v for k, v in values.items() if k in BY_NAME and BY_NAME[k].type == "path"})
        out["toml"] = config_text(converted, header=f"{script}.py --config_file")
    except UserError as e:
        out.update(ok=False, error=str(e), field=field_of(str(e), values))
    return out


def cli_text(values: dict, script: str) -> str:
    from .jobs import options_argv

    return shlex.join(["python", f"{script}.py", *options_argv(clean(values))])


def load_toml(path: Path, script: str) -> dict:
    values, _ = read_config_file(str(path), script)
    return {k: form_value(k, v) for k, v in values.items()}


def presets() -> list[str]:
    return sorted(p.stem for p in PRESETS.glob("*.toml"))


def preset(name: str, script: str) -> dict:
    if name not in presets():
        raise UserError(f"no preset {name!r}; presets: {', '.join(presets())}")
    return load_toml(PRESETS / f"{name}.toml", script)
