"""Typed, frozen option objects for the layers, built from the schema.

Why: a layer that restates the options it reads (names, types, defaults) drifts from the schema. Here a
layer names the options it needs, and ``typed_config`` makes a frozen dataclass whose fields carry the
schema's defaults and types; ``from_args`` fills one from a parsed namespace by those names.

``NetworkOptions``, ``SavingOptions`` and ``SamplingOptions`` are schema groups (plus a few named options);
``DataOptions`` (the data layer's view of a run) is every option a dataset_config may also set (a level
other than ``run``) plus the run options in ``DATA_RUN_OPTIONS``.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Dict, Iterable, List, Optional, Tuple, Union

from .definitions import BY_NAME, OPTIONS
from .schema import Option

_PYTHON_TYPES = {"str": str, "path": str, "int": int, "float": float, "bool": bool,
                 "int_or_float": Union[int, float], "size": Tuple[int, int]}


def python_type(option: Option) -> Any:
    """The annotation of an option's value: ``Optional[float]``, ``List[str]``, ``Tuple[int, int]``..."""
    kind = _PYTHON_TYPES[option.type]
    if option.nargs:
        kind = List[kind]
    return Optional[kind] if option.default is None else kind


def typed_config(name: str, options: Iterable[Tuple[str, Option]], doc: str, *, extra: Iterable[tuple] = (),
                 namespace: Optional[Dict[str, Any]] = None, frozen: bool = True, module: Optional[str] = None) -> type:
    """A dataclass ``name`` with one field per (field name, option), typed and defaulted by the schema.

    ``extra``: further ``(name, type, default)`` fields that are no option (derived values).
    """
    fields = [(field, python_type(o), dataclasses.field(default=o.default)) for field, o in options]
    fields += [(n, t, d if isinstance(d, dataclasses.Field) else dataclasses.field(default=d)) for n, t, d in extra]
    cls = dataclasses.make_dataclass(name, fields, namespace=namespace, frozen=frozen)
    cls.__doc__ = doc
    if module:
        cls.__module__ = module
    return cls


def from_args(cls: type, args: Any, **overrides: Any):
    """An instance of a ``typed_config`` class from a namespace holding its fields (missing ones keep defaults)."""
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(cls) if hasattr(args, f.name)}
    values.update(overrides)
    return cls(**values)


# run options the data layer reads besides the dataset-config keys
DATA_RUN_OPTIONS = (
    "train_data_dir", "reg_data_dir", "dataset_config", "in_json", "masked_loss", "seed", "cache_latents",
    "cache_latents_to_disk", "vae_batch_size", "cache_text_encoder_outputs", "cache_text_encoder_outputs_to_disk",
    "data_layout", "stop_on_bad_image", "allow_paths_outside_dataset",
)
DATA_OPTION_NAMES = tuple(o.name for o in OPTIONS if (o.level != "run" and o.status == "supported")
                          or o.name in DATA_RUN_OPTIONS)

DataOptions = typed_config(
    "DataOptions", [(n, BY_NAME[n]) for n in DATA_OPTION_NAMES],
    "The dataset options of a run under their command-line names (library.data.dataset_config resolves them "
    "into DatasetParams). Values may be loose as a Python caller gives them (resolution 512 or \"512,768\"); "
    "the data layer checks them against the schema.",
    module=__name__,
)


def group_option_names(group: str, *also: str) -> Tuple[str, ...]:
    """The supported options of a schema group (``--help``'s sections), in schema order, then ``also``."""
    return tuple(o.name for o in OPTIONS if o.group == group and o.status == "supported") + also


def _layer_config(name: str, names: Iterable[str], doc: str) -> type:
    return typed_config(name, [(n, BY_NAME[n]) for n in names], doc, module=__name__)


# The network layer's view: the "network" group (module, dim/alpha, dropout, network_args, weights, LoRA+ ratios).
NETWORK_OPTION_NAMES = group_option_names("network")
NetworkOptions = _layer_config("NetworkOptions", NETWORK_OPTION_NAMES, (
    "How the trained network is made (library/train/setup_model.py, network_module.py) and kept within its "
    "max norm (the loop): the schema's \"network\" group under its command-line names."))

# What the run writes and where: the "saving" group plus the metadata switches each LoRA file's writer reads.
SAVING_OPTION_NAMES = group_option_names("saving", "metadata_title", "no_metadata")
SavingOptions = _layer_config("SavingOptions", SAVING_OPTION_NAMES, (
    "Where and when the run saves LoRA files and states, how many it keeps, in which precision "
    "(library/train/outputs.py, intervals.py, the loop): the schema's \"saving\" group plus metadata_title "
    "and no_metadata."))

# Sample images: the "sampling" group plus the two run options the images depend on.
SAMPLING_OPTION_NAMES = group_option_names("sampling", "clip_skip", "seed")
SamplingOptions = _layer_config("SamplingOptions", SAMPLING_OPTION_NAMES, (
    "Which sample images a run makes and when (library/train/sampling.py, intervals.py, outputs.py): the schema's "
    "\"sampling\" group plus clip_skip and seed (a prompt without its own seed gets seed + its index)."))
