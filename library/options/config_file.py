"""``--config_file`` TOML files in kohya's format, read and written.

Why: kohya users keep their settings in a TOML with any sections (``[model_arguments]``,
``[training_arguments]`` ...) whose keys are the option names; kohya flattens the sections and lets the
command line win. We do the same. A key we do not know is ignored with a warning, as kohya ignores it,
unless it is one edit away from an option (a typo that would silently change the run: an error with
"did you mean"); kohya_ss GUI habits are read as the GUI means them (gui_config.py). A value of the
wrong type names the key, file and section, and a key set in two sections is an error instead of
"last one wins".
"""

from __future__ import annotations

import difflib
import logging
import os
from typing import Any, Dict, Mapping, Optional, Tuple

from .. import atomic
from ..errors import UserError
from . import toml_text
from .definitions import BY_NAME, OPTIONS
from .gui_config import GUI_ONLY_KEYS, apply_gui_keys, coerce_gui_value, unknown_key_warning
from .schema import GROUPS, ConversionError, Option

try:
    import tomllib
except ImportError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

COMMAND_LINE = "the command line"
logger = logging.getLogger("lorasmith.options")
NEVER_WRITTEN = ("wandb_api_key",)  # a secret: kohya's --output_config leaves it out too


def resolve_config_path(path: str) -> str:
    """kohya appends ``.toml`` when the name has no extension; accept both spellings."""
    if not os.path.exists(path) and not path.lower().endswith(".toml") and os.path.exists(path + ".toml"):
        return path + ".toml"
    return path


def read_config_file(path: str, script: str) -> Tuple[Dict[str, Any], Dict[str, str]]:
    """Flattened, converted option values of a config file, and where each came from.

    Returns ``(values, sources)``: ``values[name]`` is converted to the option's type;
    ``sources[name]`` reads like ``presets/x.toml [training_arguments]``. Keys of options meant for
    the other script are dropped when they hold the default (GUIs write every key) and are an
    error otherwise.
    """
    path = resolve_config_path(path)
    data = _load_toml(path)
    if any(isinstance(v, list) and v and isinstance(v[0], dict) for v in data.values()):
        if "datasets" in data:
            raise UserError(
                f"{path} looks like a dataset config ([[datasets]] tables); pass it with --dataset_config, "
                f"not --config_file"
            )
        key = next(k for k, v in data.items() if isinstance(v, list) and v and isinstance(v[0], dict))
        raise UserError(f"{path}: [[{key}]] is a list of tables; a config file has [sections] with one pair of "
                        f"brackets: write [{key}]")
    values: Dict[str, Any] = {}
    sources: Dict[str, str] = {}
    gui: Dict[str, Any] = {}
    gui_sources: Dict[str, str] = {}
    for key, value in data.items():
        if not isinstance(value, dict):
            _take(key, value, path, None, script, values, sources, gui, gui_sources)
            continue
        for sub_key, sub_value in value.items():
            if isinstance(sub_value, dict) or (isinstance(sub_value, list) and sub_value
                                               and isinstance(sub_value[0], dict)):
                raise UserError(
                    f"{path}: table [{key}.{sub_key}] is nested too deep; a config file has one level of "
                    f"[sections] holding option = value lines"
                )
            _take(sub_key, sub_value, path, key, script, values, sources, gui, gui_sources)
    for message in apply_gui_keys(gui, gui_sources, values, sources, path):
        logger.warning(message)
    return values, sources


def _load_toml(path: str) -> dict:
    if not os.path.isfile(path):
        raise UserError(f"config file {path} not found; check the --config_file path")
    try:
        with open(path, "rb") as f:
            text = f.read().decode("utf-8-sig")
    except UnicodeDecodeError:
        raise UserError(f"config file {path} is not UTF-8 text; save it as UTF-8") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise UserError(
            f"config file {path} is not valid TOML: {e}; strings need quotes (caption_extension = \".txt\")"
        ) from None


def _take(key: str, value: Any, path: str, section: Optional[str], script: str, values: dict, sources: dict,
          gui: dict, gui_sources: dict) -> None:
    where = f"{path} [{section}]" if section is not None else f"{path} (top level)"
    option = BY_NAME.get(key)
    if option is None and key in GUI_ONLY_KEYS:
        gui[key], gui_sources[key] = value, where
        return
    if option is None:
        logger.warning(unknown_key_warning(key, where, script))
        return
    if option.cli_only:
        raise UserError(f"{key!r} in {where} only works on the command line; remove it from the file")
    try:
        converted = option.from_value(coerce_gui_value(option, value))
    except ConversionError as e:
        raise UserError(f"{key} in {where} {e}") from None
    if not option.for_script(script):
        if converted in (option.default, None, [], False):
            return  # a GUI-written default for the other script: harmless
        raise UserError(f"{key} in {where} {script_only_phrase(option)}; remove it or run {option.scripts[0]}.py")
    if key in values:
        raise UserError(f"{key} is set twice in {path}: in {sources[key]} and {where}; keep one")
    values[key] = converted
    sources[key] = where


def suggest(name: str, script: str, cli: bool = False) -> str:
    """"did you mean 'learning_rate'?" (``cli``: "--learning_rate") or a pointer to the option list."""
    other = BY_NAME.get(name)
    if other is not None and not other.for_script(script):
        return f"it {script_only_phrase(other)}"
    names = [o.name for o in OPTIONS if o.for_script(script) and not (o.cli_only and not cli)]
    near = difflib.get_close_matches(name, names, 1, 0.6)
    if near:
        return f"did you mean --{near[0]}?" if cli else f"did you mean {near[0]!r}?"
    return "see docs/options.md for the option names"


def script_only_phrase(option: Option) -> str:
    if option.scripts == ("sdxl_train_network",):
        return "works only with sdxl_train_network.py (SDXL)"
    return "works only with train_network.py (SD1.x/SD2.x)"


# --------------------------------------------------------------------------------- writing
def config_text(values: Mapping[str, Any], header: str = "") -> str:
    """TOML text of the options in ``values`` that differ from their defaults, one section per group.

    Each value goes through the option's own converter first (what the reader applies), so the file
    reads back to the same values; sizes are written as kohya's ``"W,H"`` strings because kohya splits
    ``resolution`` as a string when it loads a --config_file.
    """
    sections: Dict[str, Dict[str, Any]] = {}
    for option in OPTIONS:
        if option.name not in values or option.cli_only or option.alias_of or option.name in NEVER_WRITTEN:
            continue
        value = _normalised(option, values[option.name])
        if value is None or value == option.default:
            continue
        sections.setdefault(option.group, {})[option.name] = _toml_ready(option, value)
    ordered = {f"{group}_arguments": sections[group] for group in GROUPS if group in sections}
    return toml_text.dumps(ordered, header)


def write_config_file(values: Mapping[str, Any], path: str, header: str = "") -> None:
    """Write ``config_text`` to a new file; an existing file is never overwritten (as kohya)."""
    if os.path.exists(path):
        raise UserError(f"{path} already exists; --output_config writes a new file, so pick another --config_file name")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise UserError(f"folder {folder} for --config_file {path} does not exist; create it first")
    atomic.write_text(path, config_text(values, header))


def _normalised(option: Option, value: Any) -> Any:
    """The value as the reader would return it (paths as text, lists of one element type)."""
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    elif isinstance(value, (list, tuple)) and option.nargs:
        value = [os.fspath(v) if isinstance(v, os.PathLike) else v for v in value]
    try:
        return option.from_value(value)
    except ConversionError as e:
        raise UserError(f"cannot write {option.name}: it {e}") from None


def _toml_ready(option: Option, value: Any) -> Any:
    if option.type == "size":
        return str(value[0]) if value[0] == value[1] else f"{value[0]},{value[1]}"
    return list(value) if isinstance(value, tuple) else value
