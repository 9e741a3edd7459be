"""The command line, generated from the schema, merged with ``--config_file``.

Why: kohya's scripts take the same options on the command line and in a TOML file, the command line
winning. kohya gets this subtly wrong for defaults (argparse fills every option, so it must parse
twice); here every flag's argparse default is ``SUPPRESS``, so the parsed namespace holds exactly
the options the user typed, and the merge is plainly defaults < file < command line.

Every parse error is a ``UserError`` (never argparse's exit), with "did you mean" for typos.
"""

from __future__ import annotations

import argparse
import logging
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple

from ..errors import UserError
from .config_file import COMMAND_LINE, read_config_file, resolve_config_path, suggest, write_config_file
from .definitions import BY_NAME, OPTIONS
from .schema import GROUPS, SCRIPTS, ConversionError, Option, format_value
from .validate import check_paths, notices, validate

logger = logging.getLogger("lorasmith.options")

_DESCRIPTION = {
    "train_network": "Train a LoRA for Stable Diffusion 1.x/2.x (kohya-ss sd-scripts options).",
    "sdxl_train_network": "Train a LoRA for Stable Diffusion XL (kohya-ss sd-scripts options).",
}
_EPILOG = (
    "Options can also come from --config_file FILE.toml (kohya format, any [sections]); the command line "
    "wins over the file. Full list with defaults: docs/options.md."
)


def options_for(script: str = "train_network") -> Tuple[Option, ...]:
    """The options ``script`` accepts, in schema order (other scripts' options are left out)."""
    _check_script(script)
    return tuple(o for o in OPTIONS if o.for_script(script))


class OptionParser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors are ``UserError``s that suggest the nearest option."""

    def __init__(self, script: str, **kwargs: Any) -> None:
        self.script = script
        super().__init__(**kwargs)

    def error(self, message: str):  # type: ignore[override]
        raise UserError(self._explain(message))

    def _explain(self, message: str) -> str:
        prefix = "unrecognized arguments: "
        if not message.startswith(prefix):
            return f"{self.prog}: {message}"
        words = message[len(prefix):].split()
        flag = next((w for w in words if w.startswith("-")), None)
        if flag is None:
            hint = " (did you mean --config_file?)" if words[0].lower().endswith(".toml") else ""
            return f"{self.prog}: unexpected word {words[0]!r}; options start with --{hint}"
        name = flag.lstrip("-").split("=")[0]
        return f"{self.prog}: unknown option --{name}; {suggest(name, self.script, cli=True)}"


def build_parser(script: str = "train_network") -> OptionParser:
    """argparse parser for ``script``: kohya's flags, with SUPPRESS defaults (see ``parse_args``)."""
    parser = OptionParser(script, prog=f"{script}.py", description=_DESCRIPTION[script], epilog=_EPILOG)
    groups = {key: parser.add_argument_group(title) for key, title in GROUPS.items()}
    for option in options_for(script):
        add_option_argument(groups[option.group], option)
    return parser


def add_option_argument(parser, option: Option, default: Any = argparse.SUPPRESS) -> None:
    """``--name`` for one schema option on ``parser`` (or an argument group): the schema's converter, help and
    metavar, so a tool that takes training options (tools/check_dataset.py) reads them as training does."""
    help_text = _help(option).replace("%", "%%")
    if option.is_flag:
        parser.add_argument(f"--{option.name}", action="store_true", default=default, help=help_text)
    else:
        parser.add_argument(f"--{option.name}", type=_converter(option), nargs=option.nargs,
                            default=default, metavar=_metavar(option), help=help_text)


def parse_args(argv: Optional[Sequence[str]] = None, script: str = "train_network", *,
               check_files: bool = True) -> argparse.Namespace:
    """Parse the command line, merge ``--config_file``, validate, log notices; return every option.

    The namespace holds every option of the schema (the other script's at their defaults), with
    kohya's derived values applied: ``caption_extention`` -> ``caption_extension``,
    ``use_8bit_adam``/``use_lion_optimizer`` -> ``optimizer_type``, ``cache_*_to_disk`` -> ``cache_*``,
    ``save_/sample_every_n_*`` 0 -> None, ``max_token_length`` 75 -> None, empty lists -> None.
    With ``--output_config`` the command-line options are written to the ``--config_file`` path and the
    process exits.
    """
    given = dict(vars(build_parser(script).parse_args(argv)))
    config_file = given.pop("config_file", None)
    output_config = given.pop("output_config", False)
    if output_config:
        _output_config(given, config_file, script)
    sources = {name: COMMAND_LINE for name in given}
    values: Dict[str, Any] = {}
    if config_file:
        config_file = resolve_config_path(config_file)
        file_values, file_sources = read_config_file(config_file, script)
        values.update(file_values)
        sources = {**file_sources, **sources}
    values.update(given)
    args = _namespace(values, sources, config_file=config_file)
    validate(args, script, sources)
    if check_files:
        check_paths(args, sources)
    for message in notices(args, script):
        logger.warning(message)
    return args


def namespace_from(values: Mapping[str, Any], script: str = "train_network", source: str = "the given values",
                   *, check: bool = True) -> argparse.Namespace:
    """Options from a mapping of Python/TOML values (ComfyUI nodes, tests), converted and validated.

    Unknown names and wrong types are ``UserError``s naming ``source``; unset options get defaults.
    """
    _check_script(script)
    converted, sources = {}, {}
    for key, value in values.items():
        converted[key] = _convert(key, value, script, source)
        sources[key] = source
    args = _namespace(converted, sources)
    if check:
        validate(args, script, sources)
    return args


def check_value(name: str, value: Any, script: str = "train_network", source: str = "the given values") -> Any:
    """One option's value converted and checked against its schema entry (type, choices, range, nan/inf).

    The one check a form field needs (the GUI validates each field as it is typed, the ComfyUI node each
    input); ``namespace_from`` + ``validate`` apply the same rules to a whole set. UserError names
    ``source``.
    """
    _check_script(script)
    converted = _convert(name, value, script, source)
    problem = BY_NAME[name].range_error(converted)
    if problem:
        raise UserError(f"{name} in {source} {problem}, got {format_value(converted)}")
    return converted


def defaults(script: str = "train_network") -> argparse.Namespace:
    """Every option at its default (not validated: the model and data paths are missing)."""
    _check_script(script)
    return _namespace({}, {})


# ------------------------------------------------------------------------------------- internals
def _convert(name: str, value: Any, script: str, source: str) -> Any:
    option = BY_NAME.get(name)
    if option is None or option.cli_only:
        raise UserError(f"unknown option {name!r} in {source}; {suggest(name, script)}")
    try:
        return option.from_value(value)
    except ConversionError as e:
        raise UserError(f"{name} in {source} {e}") from None


def _namespace(values: Dict[str, Any], sources: Dict[str, str],
               config_file: Optional[str] = None) -> argparse.Namespace:
    merged = {o.name: o.default for o in OPTIONS if not o.cli_only}
    merged.update(values)
    merged = _derive(merged, sources)
    return argparse.Namespace(**merged, config_file=config_file, output_config=False)


def _derive(v: Dict[str, Any], sources: Dict[str, str]) -> Dict[str, Any]:
    """kohya's implied settings, applied once while building the namespace (never afterwards)."""
    if v["caption_extention"] is not None:
        if "caption_extension" in sources and v["caption_extension"] != v["caption_extention"]:
            raise UserError(
                f"caption_extension {v['caption_extension']!r} and its old spelling caption_extention "
                f"{v['caption_extention']!r} disagree; keep caption_extension only"
            )
        v["caption_extension"] = v["caption_extention"]
    legacy = [(f, name) for f, name in (("use_8bit_adam", "AdamW8bit"), ("use_lion_optimizer", "Lion")) if v[f]]
    if len(legacy) > 1:
        raise UserError("use_8bit_adam and use_lion_optimizer exclude each other; use --optimizer_type instead")
    if legacy:
        flag, name = legacy[0]
        if "optimizer_type" in sources and v["optimizer_type"] not in ("", name):
            raise UserError(f"{flag} means optimizer_type {name}, but optimizer_type is {v['optimizer_type']}; "
                            f"drop {flag}")
        v["optimizer_type"] = name
    if not v["optimizer_type"]:
        v["optimizer_type"] = "AdamW"
    if v["cache_latents_to_disk"]:
        v["cache_latents"] = True
    if v["cache_text_encoder_outputs_to_disk"]:
        v["cache_text_encoder_outputs"] = True
    if v["max_token_length"] == 75:
        v["max_token_length"] = None  # 75 is the unset length (GUIs write it out)
    for name in ("save_every_n_epochs", "save_every_n_steps", "sample_every_n_epochs", "sample_every_n_steps",
                 "min_snr_gamma", "multires_noise_iterations", "scale_weight_norms"):
        if v[name] == 0:
            v[name] = None  # kohya GUIs write 0 for "off", and kohya tests these for truth
    for option in OPTIONS:
        if option.nargs and v.get(option.name) == []:
            v[option.name] = None
    return v


def _output_config(given: Dict[str, Any], config_file: Optional[str], script: str) -> None:
    if not config_file:
        raise UserError("--output_config writes the options to the --config_file path; add --config_file NEW.toml")
    path = config_file if config_file.lower().endswith(".toml") else config_file + ".toml"
    # a file that training would refuse is never written: the same rules, the inputs may come later
    sources = {name: COMMAND_LINE for name in given}
    validate(_namespace(dict(given), sources), script, sources, require_inputs=False)
    write_config_file(given, path, header=f"written by {script}.py --output_config")
    logger.info("wrote %s", path)
    raise SystemExit(0)


def _converter(option: Option):
    def convert(text: str):
        try:
            return option.from_text(text)
        except ConversionError as e:
            raise argparse.ArgumentTypeError(str(e)) from None

    convert.__name__ = option.type
    return convert


def _metavar(option: Option) -> str:
    if option.metavar:
        return option.metavar
    if option.choices and len(option.choices) <= 6:
        return "{" + ",".join(str(c) for c in option.choices) + "}"
    return {"int": "N", "float": "X", "int_or_float": "N", "size": "W[,H]"}.get(option.type, option.name.upper())


def _help(option: Option) -> str:
    text = option.help
    if option.status == "ignored":
        text = "[ignored] " + text
    elif option.status == "unsupported":
        text = "[not supported] " + text
    if option.choices and len(option.choices) > 6:
        text += " Choices: " + ", ".join(map(str, option.choices)) + "."
    if not option.is_flag and option.default not in (None, ""):
        text += f" (default: {format_value(option.default)})"
    return text


def _check_script(script: str) -> None:
    if script not in SCRIPTS:
        raise ValueError(f"script must be one of {SCRIPTS}, got {script!r}")
