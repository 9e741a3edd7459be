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
from typing import Any, List, Optional

from .errors import DatasetError, Issues
from .folders import discover_repeat_folders, is_image_name
from .layouts import detect_layout
from ..options.dataset_keys import CLI_TO_FILE, KEYS, checked_option, checked_value, file_value, is_ignored, keys_of
from ..options.definitions import BY_NAME
from ..options.validate import resolution_problem
from ..options.schema import ConversionError
from .params import DATA_LAYOUTS, DataOptions, DatasetParams, SubsetParams

# dataset-level keys kohya refuses inside a [[datasets.subsets]] table (not "unknown": say where they go)
DATASET_ONLY_KEYS = tuple(k for k, o in KEYS.items() if o.level == "dataset" and not is_ignored(k))


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


def _check_table(table: Any, table_name: str, where: str, path: str, issues: Issues, extra=()) -> dict:
    if not isinstance(table, dict):
        raise DatasetError(f"{path}: {where} must be a table")
    allowed = keys_of(table_name) if table_name else {}
    for key, value in table.items():
        if key in extra:
            continue
        if is_ignored(key):
            issues.warning("config_key_ignored", f"{path}: {where}: kohya key {key!r} is accepted but ignored by lorasmith", path)
            continue
        if key not in allowed:
            near = difflib.get_close_matches(key, list(allowed) + list(extra), 1, 0.6)
            hint = f'did you mean "{near[0]}"?' if near else "see docs/datasets.md for the keys"
            raise DatasetError(f"{path}: unknown key {key!r} in {where}; {hint}")
        try:
            file_value(key, value)
        except ConversionError as e:
            raise DatasetError(f"{path}: {where}: {key} {e}") from None
    return table


def _refuse_dataset_keys(subset_table: Any, where: str, path: str) -> None:
    """Resolution, buckets, batch size and the validation split belong to a whole dataset (kohya refuses them in a
    subset too): say where they go instead of calling them unknown."""
    for key in DATASET_ONLY_KEYS:
        if isinstance(subset_table, dict) and key in subset_table:
            raise DatasetError(f"{path}: {where}: {key} is a dataset-level key (as in kohya); move it to its "
                               "[[datasets]] table or to [general]")


def _cli_values(options: DataOptions) -> dict:
    values = {}
    for f in fields(options):
        value = getattr(options, f.name)
        if value is not None:
            values[CLI_TO_FILE.get(f.name, f.name)] = value
    return values


def _lookup(name: str, chain: List[dict], default):
    for table in chain:
        value = table.get(name)
        if value is not None:
            return value
    return default


def _checked(values: dict, where: str) -> dict:
    """Every dataset key's value through its schema entry (sizes parsed, choices, ranges): the same rule
    whichever way a value arrived (file table, command line, a Python caller's DataOptions)."""
    out = {}
    for key, value in values.items():
        try:
            out[key] = checked_value(key, value) if key in KEYS else value
        except ConversionError as e:
            raise DatasetError(f"{where}: {key} {e}") from None
    return out


def checked_options(options: DataOptions) -> DataOptions:
    """``options`` with every value through its schema entry, as parse_args would have it (a Python caller's
    "Kohya" becomes "kohya", a negative prior_loss_weight is refused): the command line's rules, once."""
    values = {}
    for f in fields(options):
        try:
            values[f.name] = checked_option(BY_NAME[f.name], getattr(options, f.name))
        except ConversionError as e:
            raise DatasetError(f"{f.name} {e}") from None
    return DataOptions(**values)


def _subset_from(chain: List[dict], where: str = "command line") -> SubsetParams:
    names = [f.name for f in fields(SubsetParams)]
    defaults = {f.name: f.default for f in fields(SubsetParams)}
    values = _checked({name: _lookup(name, chain, defaults[name]) for name in names}, where)
    prompt = chain[0].get("instance_prompt", chain[0].get("class_prompt"))
    if prompt is not None:
        values["fixed_caption"] = prompt
    return SubsetParams(**values)


def _dataset_from(chain: List[dict], subsets: List[SubsetParams], where: str) -> DatasetParams:
    defaults = {f.name: f.default for f in fields(DatasetParams) if f.name != "subsets"}
    values = _checked({name: _lookup(name, chain, default) for name, default in defaults.items()}, where)
    problem = resolution_problem(values["resolution"], values["enable_bucket"], values["min_bucket_reso"],
                                 values["max_bucket_reso"], values["bucket_reso_steps"])
    if problem:  # here, while the file and table are known (prepare checks the command line's dataset again)
        raise DatasetError(f"{where}: {problem}")
    return DatasetParams(subsets=subsets, **values)


def _tables(value, missing: str) -> list:
    """A TOML array of tables with at least one entry; else the ``missing`` message."""
    if not isinstance(value, list) or not value:
        raise DatasetError(missing)
    return value


def datasets_from_config(config: dict, path: str, options: Optional[DataOptions] = None, issues: Optional[Issues] = None) -> List[DatasetParams]:
    """Validate a parsed dataset_config and apply the subset -> dataset -> general -> CLI fallbacks."""
    issues = issues if issues is not None else Issues()
    options = options or DataOptions()
    cli = _cli_values(options)
    _check_table(config, "", "the top level", path, issues, extra=("general", "datasets"))
    general = _check_table(config.get("general", {}), "general", "[general]", path, issues)
    datasets_cfg = _tables(config.get("datasets"),
                           f"{path}: no [[datasets]] table; add one with at least one [[datasets.subsets]] (image_dir = ...)")
    result = []
    for i, ds in enumerate(datasets_cfg, 1):
        where = f"[[datasets]] #{i}"
        _check_table(ds, "datasets", where, path, issues, extra=("subsets",))
        subsets_cfg = _tables(ds.get("subsets"), f"{path}: {where} has no [[datasets.subsets]]; add one with image_dir = \"...\"")
        subsets = []
        for j, sub in enumerate(subsets_cfg, 1):
            swhere = f"[[datasets.subsets]] #{j} of {where}"
            _refuse_dataset_keys(sub, swhere, path)
            _check_table(sub, "subsets", swhere, path, issues)
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
    options = checked_options(options)
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
