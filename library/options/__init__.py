"""ONE schema of every training option; the command line, ``--config_file``, presets and docs come from it.

Entry points::

    args = parse_args(sys.argv[1:], script="sdxl_train_network")   # CLI + config file, validated

ComfyUI nodes and tests build options from plain values::

    args = namespace_from({"pretrained_model_name_or_path": ..., "train_data_dir": ...})

Modules: ``schema`` (the Option record, type conversion), ``definitions`` (the list), ``config_file``
(kohya TOML read/write), ``cli`` (argparse and the merge), ``validate`` (checks before any model loads),
``kwargs`` (network/optimizer/scheduler key=value lists), ``docs`` (docs/options.md), ``dataset_keys`` (the
dataset_config tables' keys, from each option's ``level``), ``typed`` (the layers' frozen option objects).
"""

from .cli import OptionParser, build_parser, check_value, defaults, namespace_from, options_for, parse_args
from .config_file import config_text, read_config_file, write_config_file
from .definitions import BY_NAME, NETWORK_ARG_KEYS, OPTIONS
from .docs import render_markdown
from .kwargs import network_kwargs, split_key_values
from .schema import GROUPS, LEVELS, SCRIPTS, Option, finite_float, parse_size
from .validate import check_paths, notices, validate

__all__ = [
    "BY_NAME", "GROUPS", "LEVELS", "NETWORK_ARG_KEYS", "OPTIONS", "SCRIPTS", "Option", "OptionParser",
    "build_parser", "check_paths", "check_value", "config_text", "defaults", "finite_float", "namespace_from", "network_kwargs", "notices",
    "options_for", "parse_args", "parse_size", "read_config_file", "render_markdown", "split_key_values",
    "validate", "write_config_file",
]
