"""``dataset_config`` TOML/JSON files and command-line layouts -> a list of ``DatasetParams``.

Why: kohya users describe datasets either by folder conventions on the command line
(``--train_data_dir img --reg_data_dir reg``) or by a ``--dataset_config`` TOML with ``[general]``,
``[[datasets]]`` and ``[[datasets.subsets]]`` tables. Both end here as the same dataclasses.

Lookup order for every value: subset table -> dataset table -> ``[general]`` -> command line
(``DataOptions``) -> default; ``batch_size`` in a file is ``train_batch_size`` on the command line and
``num_repeats`` is ``dataset_repeats``. A key we do not know is an error with a "did you mean"
suggestion naming the file and the table; kohya keys we accept but do not implement (e.g.
``face_crop_aug_range``) only warn. ``train_data_dir`` is ignored when a dataset_config is given (as in kohya).
"""

from __future__ import annotations

import difflib
import json
import os
import tomllib
from dataclasses import fields
from typing import Any, Dict, List, Optional

from .errors import DatasetError, Issues
from .folders import discover_repeat_folders, is_image_name
from .layouts import detect_layout
from ..options.definitions import BY_NAME, MAX_REPEATS
from ..options.schema import format_value
from ..vocabulary import INTERPOLATIONS
from .params import DATA_LAYOUTS, SUBSET_LAYOUTS, DataOptions, DatasetParams, SubsetParams, parse_resolution

_BOOL, _INT, _FLOAT, _STR = "bool", "int", "float", "str"
DATASET_KEYS = {
    "resolution": "resolution",
    "batch_size": _INT,
    "enable_bucket": _BOOL,
    "min_bucket_reso": _INT,
    "max_bucket_reso": _INT,
    "bucket_reso_steps": _INT,
    "bucket_no_upscale": _BOOL,
    "prior_loss_weight": _FLOAT,
    "validation_split": _FLOAT,
    "validation_seed": _INT,
}
# dataset-level keys kohya refuses inside a [[datasets.subsets]] table
DATASET_ONLY_KEYS = ("validation_split", "validation_seed")
# keys a subset inherits from its dataset and [general]
INHERITED_SUBSET_KEYS = {
    "num_repeats": _INT,
    "class_tokens": _STR,
    "caption_extension": _STR,
    "shuffle_caption": _BOOL,
    "caption_separator": _STR,
    "keep_tokens": _INT,
    "keep_tokens_separator": _STR,
    "secondary_separator": _STR,
    "enable_wildcard": _BOOL,
    "caption_prefix": _STR,
    "caption_suffix": _STR,
    "caption_dropout_rate": _FLOAT,
    "caption_dropout_every_n_epochs": _INT,
    "caption_tag_dropout_rate": _FLOAT,
    "flip_aug": _BOOL,
    "color_aug": _BOOL,
    "random_crop": _BOOL,
    "resize_interpolation": _STR,
    "alpha_mask": _BOOL,
    "conditioning_data_dir": _STR,
    "caption_column": _STR,
    "image_column": _STR,
    "layout": _STR,
    "recursive": _BOOL,
}
SUBSET_ONLY_KEYS = {"image_dir": _STR, "is_reg": _BOOL, "metadata_file": _STR, "instance_prompt": _STR, "class_prompt": _STR}
IGNORED_KOHYA_KEYS = {
    "face_crop_aug_range", "token_warmup_min", "token_warmup_step", "network_multiplier", "cache_info",
    "custom_attributes", "sample_ratio", "max_token_length", "debug_dataset",
}
CLI_TO_CONFIG = {"train_batch_size": "batch_size", "dataset_repeats": "num_repeats"}
_CONFIG_TO_CLI = {v: k for k, v in CLI_TO_CONFIG.items()}
_INTERPOLATIONS = INTERPOLATIONS


def load_config_file(path: str) -> dict:
    """Parse a TOML (or .json) dataset_config; DatasetError with the position on syntax errors."""
    if not os.path.isfile(path):
        raise DatasetError(f"dataset_config {path} does not exist; check the path")
    with open(path, "rb") as f:
        raw = f.read()
    try:
        if path.lower().endswith(".json"):
            return json.loads(raw.decode("utf-8"))
        return tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise DatasetError(f"dataset_config {path} is not UTF-8; re-save it as UTF-8") from None
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as e:
        raise DatasetError(f"dataset_config {path} is not valid {'JSON' if path.lower().endswith('.json') else 'TOML'}: {e}") from None


def _check_table(table: Any, allowed: Dict[str, str], where: str, path: str, issues: Issues, extra=()) -> dict:
    if not isinstance(table, dict):
        raise DatasetError(f"{path}: {where} must be a table")
    for key, value in table.items():
        if key in extra:
            continue
        if key in IGNORED_KOHYA_KEYS:
            issues.warning("config_key_ignored", f"{path}: {where}: kohya key {key!r} is accepted but ignored by lorasmith", path)
            continue
        if key not in allowed:
            near = difflib.get_close_matches(key, list(allowed) + list(extra), 1, 0.6)
            hint = f'did you mean "{near[0]}"?' if near else "see docs/datasets.md for the keys"
            raise DatasetError(f"{path}: unknown key {key!r} in {where}; {hint}")
        _check_type(key, value, allowed[key], where, path)
    return table


def _refuse_dataset_keys(subset_table: Any, where: str, path: str) -> None:
    """kohya splits whole datasets, never single subsets: a subset-level split key is a mistake."""
    for key in DATASET_ONLY_KEYS:
        if isinstance(subset_table, dict) and key in subset_table:
            raise DatasetError(f"{path}: {where}: {key} is a dataset-level key (as in kohya); move it to its "
                               "[[datasets]] table or to [general]")


def _check_type(key, value, kind, where, path) -> None:
    ok = {
        _BOOL: isinstance(value, bool),
        _INT: isinstance(value, int) and not isinstance(value, bool),
        _FLOAT: isinstance(value, (int, float)) and not isinstance(value, bool),
        _STR: isinstance(value, str),
        "resolution": True,
    }[kind]
    if not ok:
        example = {_BOOL: "true", _INT: "10", _FLOAT: "0.1", _STR: '".txt"'}[kind]
        raise DatasetError(f"{path}: {where}: {key} must be a {kind} (like {key} = {example}), got {value!r}")
    if kind == "resolution":
        value = parse_resolution(value, f"{path}: {where}: resolution")
    problem = _range_problem(key, value)
    if problem:
        raise DatasetError(f"{path}: {where}: {key} {problem}, got {format_value(value)}")
    if key == "layout" and value not in SUBSET_LAYOUTS:
        raise DatasetError(f"{path}: {where}: layout must be one of {', '.join(SUBSET_LAYOUTS)}, got {value!r}")
    if key == "resize_interpolation" and value not in _INTERPOLATIONS:
        raise DatasetError(f"{path}: {where}: resize_interpolation must be one of {', '.join(_INTERPOLATIONS)}")


def _range_problem(key: str, value: Any) -> Optional[str]:
    """The options schema's range (and nan/inf) check for a dataset key; num_repeats 0 skips a subset."""
    if key == "num_repeats":
        return None if 0 <= value <= MAX_REPEATS else f"must be between 0 and {MAX_REPEATS}"
    option = BY_NAME.get(_CONFIG_TO_CLI.get(key, key))
    return option.range_error(value) if option is not None else None


def _cli_values(options: DataOptions) -> dict:
    values = {}
    for f in fields(options):
        value = getattr(options, f.name)
        if value is not None:
            values[CLI_TO_CONFIG.get(f.name, f.name)] = value
    return values


def _lookup(name: str, chain: List[dict], default):
    for table in chain:
        value = table.get(name)
        if value is not None:
            return value
    return default


def _subset_from(chain: List[dict], where: str = "command line") -> SubsetParams:
    base = SubsetParams()
    values = {f.name: _lookup(f.name, chain, getattr(base, f.name)) for f in fields(SubsetParams)}
    subset = SubsetParams(**values)
    prompt = chain[0].get("instance_prompt", chain[0].get("class_prompt"))
    if prompt is not None:
        subset.fixed_caption = prompt
    validate_subset(subset, where)
    return subset


def validate_subset(subset: SubsetParams, where: str) -> None:
    """Value checks that hold whichever way an option arrived (file or command line)."""
    for name in ("caption_dropout_rate", "caption_tag_dropout_rate"):
        value = getattr(subset, name)
        if not 0 <= value <= 1:
            raise DatasetError(f"{where}: {name} must be between 0 and 1, got {value}")
    for name in ("keep_tokens", "caption_dropout_every_n_epochs"):
        if getattr(subset, name) < 0:
            raise DatasetError(f"{where}: {name} must be 0 or more, got {getattr(subset, name)}")
    if subset.layout not in SUBSET_LAYOUTS:
        raise DatasetError(f"{where}: layout must be one of {', '.join(SUBSET_LAYOUTS)}, got {subset.layout!r}")
    if subset.resize_interpolation is not None and subset.resize_interpolation not in _INTERPOLATIONS:
        raise DatasetError(f"{where}: resize_interpolation must be one of {', '.join(_INTERPOLATIONS)}, got {subset.resize_interpolation!r}")


def _dataset_from(chain: List[dict], subsets: List[SubsetParams], where: str) -> DatasetParams:
    base = DatasetParams()
    values = {f.name: _lookup(f.name, chain, getattr(base, f.name)) for f in fields(DatasetParams) if f.name != "subsets"}
    values["resolution"] = parse_resolution(values["resolution"], f"{where}: resolution")
    if not 0 <= values["validation_split"] < 1:
        raise DatasetError(f"{where}: validation_split must be at least 0 and below 1 (0.1 holds out 10% of the images), "
                           f"got {values['validation_split']}")
    return DatasetParams(subsets=subsets, **values)


def datasets_from_config(config: dict, path: str, options: Optional[DataOptions] = None, issues: Optional[Issues] = None) -> List[DatasetParams]:
    """Validate a parsed dataset_config and apply the subset -> dataset -> general -> CLI fallbacks."""
    issues = issues if issues is not None else Issues()
    options = options or DataOptions()
    cli = _cli_values(options)
    general_keys = {**DATASET_KEYS, **INHERITED_SUBSET_KEYS}
    _check_table(config, {}, "the top level", path, issues, extra=("general", "datasets"))
    general = _check_table(config.get("general", {}), general_keys, "[general]", path, issues)
    datasets_cfg = config.get("datasets")
    if not isinstance(datasets_cfg, list) or not datasets_cfg:
        raise DatasetError(f"{path}: no [[datasets]] table; add one with at least one [[datasets.subsets]] (image_dir = ...)")
    result = []
    for i, ds in enumerate(datasets_cfg, 1):
        where = f"[[datasets]] #{i}"
        _check_table(ds, general_keys, where, path, issues, extra=("subsets",))
        subsets_cfg = ds.get("subsets")
        if not isinstance(subsets_cfg, list) or not subsets_cfg:
            raise DatasetError(f"{path}: {where} has no [[datasets.subsets]]; add one with image_dir = \"...\"")
        subsets = []
        for j, sub in enumerate(subsets_cfg, 1):
            swhere = f"[[datasets.subsets]] #{j} of {where}"
            _refuse_dataset_keys(sub, swhere, path)
            _check_table(sub, {**INHERITED_SUBSET_KEYS, **SUBSET_ONLY_KEYS}, swhere, path, issues)
            if "image_dir" not in sub and "metadata_file" not in sub:
                raise DatasetError(f"{path}: {swhere} needs image_dir (a folder of images) or metadata_file")
            subsets.append(_subset_from([sub, ds, general, cli], f"{path}: {swhere}"))
        result.append(_dataset_from([ds, general, cli], subsets, f"{path}: {where}"))
    return result


def _cli_subset(options: DataOptions, **overrides) -> SubsetParams:
    cli = _cli_values(options)
    subset = _subset_from([overrides, cli])
    return subset


def _flat_folder_error(folder: str, what: str, flag: str) -> DatasetError:
    n = sum(1 for name in os.listdir(folder) if is_image_name(name))
    return DatasetError(
        f"{what} {folder} has {n} images directly inside it and no subfolders like 10_name/: kohya's layout does not use "
        f"images in the root folder. Move them into {os.path.join(folder, '10_<your token> <class>')} "
        f"(10 = repeats), or pass {flag} to use the folder as is."
    )


def _subsets_for_dir(folder: str, options: DataOptions, is_reg: bool, issues: Issues) -> List[SubsetParams]:
    what, flag = ("reg_data_dir", "--class_prompt") if is_reg else ("train_data_dir", "--instance_prompt")
    prompt = options.class_prompt if is_reg else options.instance_prompt
    layout = options.data_layout if options.data_layout != "auto" else detect_layout(folder)
    if layout not in DATA_LAYOUTS and layout not in ("missing", "empty"):
        raise DatasetError(f"data_layout must be one of {', '.join(DATA_LAYOUTS)}, got {layout!r}")
    if layout == "missing":
        raise DatasetError(f"{what} {folder} does not exist; check the path")
    if layout == "empty":
        raise DatasetError(
            f"{what} {folder} holds no images: looked for 10_name/ subfolders, metadata.jsonl, image/ + text/, "
            "a saved `datasets` dataset and images"
        )
    if layout == "kohya":
        if prompt is not None:
            issues.warning("prompt_ignored", f"{flag} is ignored for {folder}: its NN_name subfolders give the class tokens", folder)
        found = discover_repeat_folders(folder, is_reg, issues)
        if not found and any(is_image_name(n) for n in os.listdir(folder)):
            raise _flat_folder_error(folder, what, flag)
        return [_cli_subset(options, image_dir=p, num_repeats=r, class_tokens=t, is_reg=is_reg, layout="images") for p, r, t in found]
    if layout == "images" and prompt is None and options.data_layout == "auto":
        raise _flat_folder_error(folder, what, flag)
    extra = {"image_dir": folder, "is_reg": is_reg, "num_repeats": options.dataset_repeats, "layout": layout if layout != "kohya" else "images"}
    if prompt is not None:
        extra["fixed_caption"] = prompt
    return [_cli_subset(options, **extra)]


def datasets_from_options(options: DataOptions, issues: Optional[Issues] = None) -> List[DatasetParams]:
    """The single dataset described by command-line folders (train_data_dir, reg_data_dir, in_json)."""
    issues = issues if issues is not None else Issues()
    if not options.train_data_dir and not options.in_json:
        raise DatasetError("no dataset given: pass --train_data_dir FOLDER or --dataset_config FILE.toml")
    if options.in_json:
        subsets = [_cli_subset(options, image_dir=options.train_data_dir, metadata_file=options.in_json, num_repeats=options.dataset_repeats)]
    else:
        subsets = _subsets_for_dir(options.train_data_dir, options, False, issues)
    if not subsets:
        raise DatasetError(
            f"train_data_dir {options.train_data_dir} has no usable subfolders: name them like 10_mysubject "
            "(repeats, an underscore, then the class tokens)"
        )
    if options.reg_data_dir:
        subsets += _subsets_for_dir(options.reg_data_dir, options, True, issues)
    cli = _cli_values(options)
    return [_dataset_from([cli], subsets, "command line")]


def resolve_datasets(options: DataOptions, issues: Optional[Issues] = None) -> List[DatasetParams]:
    """DatasetParams from ``options.dataset_config`` if set, else from the command-line folders."""
    issues = issues if issues is not None else Issues()
    if options.dataset_config:
        if options.train_data_dir or options.reg_data_dir:
            issues.warning(
                "train_data_dir_ignored",
                f"train_data_dir/reg_data_dir are ignored because dataset_config {options.dataset_config} is given (as in kohya)",
                options.dataset_config,
            )
        config = load_config_file(options.dataset_config)
        return datasets_from_config(config, options.dataset_config, options, issues)
    return datasets_from_options(options, issues)
