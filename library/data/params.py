"""The data layer's parameter classes, made from the option schema under kohya's names.

Why: a ``dataset_config`` TOML maps its tables onto ``DatasetParams``/``SubsetParams`` and the command line
maps onto ``DataOptions``; the fields, their types and defaults come from library/options (each option's
``level`` says which table takes it, library/options/dataset_keys.py adds the file-only keys), so this module
restates no option.

- ``SubsetParams``: one source of images (a folder, a metadata file, a saved ``datasets`` dataset),
  i.e. one ``[[datasets.subsets]]`` table: every ``subset``/``subset_only`` key, plus ``fixed_caption``.
- ``DatasetParams``: images sharing resolution, buckets and batch size, i.e. one ``[[datasets]]`` table:
  every ``dataset`` key, plus its ``subsets``.
- ``DataOptions``: the command-line view (train_data_dir, reg_data_dir, dataset_config, ...);
  ``dataset_config.resolve_datasets`` turns it into a list of ``DatasetParams``.
"""

from __future__ import annotations

import os
from dataclasses import field, fields
from typing import List, Optional

from ..options.dataset_keys import params_fields
from ..options.typed import DataOptions, typed_config

from ..vocabulary import DATA_LAYOUTS, SUBSET_LAYOUTS  # noqa: F401  (re-exported for the data layer)

__all__ = ["DATASET_FIELDS", "DATA_LAYOUTS", "DataOptions", "DatasetParams", "SUBSET_FIELDS", "SUBSET_LAYOUTS", "SubsetParams"]


def _subset_name(self) -> str:
    """Short name for messages and metadata (folder or metadata file name)."""
    src = self.image_dir or self.metadata_file or "?"
    return os.path.basename(os.path.normpath(src)) or src


# instance_prompt/class_prompt in a subset table become its fixed_caption (dataset_config._subset_from)
_PROMPTS = ("instance_prompt", "class_prompt")
SubsetParams = typed_config(
    "SubsetParams", [(k, o) for k, o in params_fields("subset", "subset_only") if k not in _PROMPTS],
    "One image source; fields are kohya's ``[[datasets.subsets]]`` keys (ours marked in the schema).",
    extra=[("fixed_caption", Optional[str], None),  # DreamBooth instance_prompt / class_prompt: one caption for all
           ("allow_paths_outside_dataset", bool, False)],  # (command line only) metadata may name files outside
    namespace={"name": property(_subset_name)}, module=__name__,
)
DatasetParams = typed_config(
    "DatasetParams", params_fields("dataset"),
    "A group of subsets sharing resolution, buckets and batch size (one ``[[datasets]]`` table).",
    extra=[("subsets", List[SubsetParams], field(default_factory=list))], module=__name__,
)

SUBSET_FIELDS = tuple(f.name for f in fields(SubsetParams))
DATASET_FIELDS = tuple(f.name for f in fields(DatasetParams) if f.name != "subsets")
