"""docs/options.md, rendered from the schema (``python tools/gen_options_doc.py`` writes it)."""

from __future__ import annotations

from .definitions import OPTIONS
from .schema import GROUPS, SD_ONLY, SDXL_ONLY, Option, format_value

_INTRO = """\
# Options

<!-- Generated from library/options/definitions.py by `python tools/gen_options_doc.py`; do not edit. -->

`train_network.py` (SD1.x/SD2.x) and `sdxl_train_network.py` (SDXL) take kohya-ss sd-scripts' option
names, so a kohya command line or config file means the same thing here. Give options on the command line
(`--network_dim 16`, flags like `--enable_bucket` take no value) or in a TOML file with `--config_file`.

## Config files

```toml
[model_arguments]
v_parameterization = false

[training_arguments]
learning_rate = 1e-4
network_args = ["conv_dim=4", "conv_alpha=1"]
```

- Sections are free (kohya's `[model_arguments]`, `[training_arguments]`, ... or none at all); all keys are
  read as one flat list. A key may appear only once.
- Precedence: defaults < config file < command line. Only options you actually type on the command line
  override the file. A flag set to `true` in the file cannot be turned off from the command line; use
  another file.
- A key one edit away from an option (`learning_rat`) is an error that suggests the name; any other
  unknown key is ignored with a warning, as kohya ignores it. A value of the wrong type names the key,
  file and section.
- Files written by the kohya_ss GUI load unchanged: its GUI-only keys (`epoch`, `noise_offset_type`, ...)
  are read as the GUI means them (one notice lists them), `1`/`0` for flags, `""` for "not set" and `[]`
  for an empty list. docs/kohya.md lists every kohya option and how lorasmith treats it.
- `--config_file NEW.toml --output_config` writes the command-line options to a new file and exits.
- Presets in `presets/` are such files: `python train_network.py --config_file presets/sd15_lora.toml
  --pretrained_model_name_or_path MODEL --train_data_dir DATA`.

Marks: **SD1/2 only** / **SDXL only** — the option exists only in that script; *(ours)* — not a kohya
option; **ignored** — accepted so kohya files load, does nothing (a notice says so when set);
**not supported** — accepted by name, but setting it is an error telling you what to do instead.
"""


def render_markdown() -> str:
    """The whole of docs/options.md."""
    lines = [_INTRO.rstrip("\n"), "", f"{len(OPTIONS)} options in {len(GROUPS)} groups.", ""]
    for group, title in GROUPS.items():
        members = [o for o in OPTIONS if o.group == group]
        if not members:
            continue
        lines += [f"## {title}", "", "| Option | Type | Default | Description |", "|---|---|---|---|"]
        lines += [_row(o) for o in members]
        lines.append("")
    lines += _dataset_keys_section()
    return "\n".join(lines)


_TABLES = {"dataset": "`[general]` `[[datasets]]`", "subset": "`[general]` `[[datasets]]` `[[datasets.subsets]]`",
           "subset_only": "`[[datasets.subsets]]`"}


def _dataset_keys_section() -> list:
    """Every key of a dataset_config TOML, the tables that take it and its option (from each option's level)."""
    from .dataset_keys import KEYS  # imports definitions too; kept local so this module's import stays light

    lines = ["## Dataset config keys", "",
             "Keys of a `--dataset_config` TOML ([datasets.md](datasets.md#dataset_config-toml)), from each option's "
             "level: a key in `[general]` or `[[datasets]]` is inherited by the subsets below it; a value is looked up "
             "subset → dataset → `[general]` → command line → default. Ignored kohya keys only warn.", "",
             "| Key | Tables | Command line | Default | Description |", "|---|---|---|---|---|"]
    by_cli = {o.config_key: o.name for o in OPTIONS if o.level != "run"}
    for level in ("dataset", "subset", "subset_only"):
        for key, option in KEYS.items():
            if option.level != level:
                continue
            cli = f"`--{by_cli[key]}`" if key in by_cli else "file only"
            default = "off" if option.is_flag else "—" if option.default is None else f"`{format_value(option.default)}`"
            text = ("**ignored** " if option.status == "ignored" else "") + option.help
            limits = _limits(option)
            if option.choices:
                text += " Choices: " + ", ".join(f"`{c}`" for c in option.choices) + "."
            if limits:
                text += f" Range: {limits}."
            lines.append(f"| `{key}` | {_TABLES[level]} | {cli} | {default} | {_cell(text)} |")
    lines.append("")
    return lines


def _row(option: Option) -> str:
    marks = []
    if option.scripts == SD_ONLY:
        marks.append("**SD1/2 only**")
    elif option.scripts == SDXL_ONLY:
        marks.append("**SDXL only**")
    if option.status == "ignored":
        marks.append("**ignored**")
    elif option.status == "unsupported":
        marks.append("**not supported**")
    text = " ".join(marks + [option.help.replace("*", "\\*")])
    if option.choices:
        text += " Choices: " + ", ".join(f"`{c}`" for c in option.choices) + "."
    limits = _limits(option)
    if limits:
        text += f" Range: {limits}."
    default = "—" if option.default in (None,) else f"`{format_value(option.default)}`"
    if option.is_flag:
        default = "off"
    return f"| `--{option.name}` | {option.type_label()} | {default} | {_cell(text)} |"


def _limits(option: Option) -> str:
    parts = [f"{symbol} {format_value(bound)}" for symbol, bound in option.bounds()]
    if option.unbounded:
        parts.append("any finite number")
    return ", ".join(parts)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def write_or_check(path: str, text: str, check: bool, command: str) -> int:
    """A generated doc: with ``check``, 0 if ``path`` already holds ``text`` else 1 (saying to run ``command``);
    without, write it through the atomic writer."""
    import os
    import sys

    from library import atomic

    if check:
        current = open(path, encoding="utf-8").read() if os.path.exists(path) else ""
        if current != text:
            print(f"{path} is out of date; run: {command}", file=sys.stderr)
            return 1
        print(f"{path} is up to date")
        return 0
    atomic.write_text(path, text, newline="\n")
    print(f"wrote {path}")
    return 0


def doc_tool_main(argv, tool_doc: str, path: str, render, command: str) -> int:
    """The one body of the doc generators (tools/gen_options_doc.py, gen_kohya_doc.py): ``--check`` and
    ``--output`` (default ``path``), then :func:`write_or_check` with ``render()``'s text."""
    import argparse
    import os

    shown = f"docs/{os.path.basename(path)}"
    parser = argparse.ArgumentParser(description=tool_doc.splitlines()[0])
    parser.add_argument("--check", action="store_true", help=f"only check that {shown} is up to date")
    parser.add_argument("--output", default=path, help=f"where to write (default: {shown})")
    args = parser.parse_args(argv)
    return write_or_check(args.output, render(), args.check, command)
