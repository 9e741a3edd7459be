"""Plain dataclasses holding every dataset option, under kohya's names.

Why: the option schema (library/options.py) maps command-line arguments onto ``DataOptions`` by name,
and a ``dataset_config`` TOML maps its tables onto ``DatasetParams``/``SubsetParams``. Keeping kohya's
names and defaults means a kohya command line or TOML means the same thing here.

- ``SubsetParams``: one source of images (a folder, a metadata file, a saved ``datasets`` dataset),
  i.e. one ``[[datasets.subsets]]`` table.
- ``DatasetParams``: images sharing resolution, buckets and batch size, i.e. one ``[[datasets]]`` table.
- ``DataOptions``: the command-line view (train_data_dir, reg_data_dir, dataset_config, ...);
  ``dataset_config.resolve_datasets`` turns it into a list of ``DatasetParams``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import List, Optional, Tuple, Union

from ..options.schema import parse_size
from .errors import DatasetError

from ..vocabulary import DATA_LAYOUTS, SUBSET_LAYOUTS  # noqa: F401  (re-exported for the data layer)


@dataclass
class SubsetParams:
    """One image source; field names are kohya's ``[[datasets.subsets]]`` keys unless marked (ours)."""

    image_dir: Optional[str] = None
    num_repeats: int = 1
    is_reg: bool = False
    class_tokens: Optional[str] = None
    caption_extension: str = ".caption"
    metadata_file: Optional[str] = None
    # caption processing (captions.process_caption)
    shuffle_caption: bool = False
    caption_separator: str = ","
    keep_tokens: int = 0
    keep_tokens_separator: str = ""
    secondary_separator: Optional[str] = None
    enable_wildcard: bool = False
    caption_prefix: Optional[str] = None
    caption_suffix: Optional[str] = None
    caption_dropout_rate: float = 0.0
    caption_dropout_every_n_epochs: int = 0
    caption_tag_dropout_rate: float = 0.0
    # augmentation
    flip_aug: bool = False
    color_aug: bool = False
    random_crop: bool = False
    resize_interpolation: Optional[str] = None
    # loss masks (masks.py; used with masked_loss)
    alpha_mask: bool = False
    conditioning_data_dir: Optional[str] = None
    # (ours) other layouts
    layout: str = "auto"
    caption_column: str = "text"
    image_column: str = "image"
    fixed_caption: Optional[str] = None  # DreamBooth instance_prompt / class_prompt: one caption for all
    recursive: bool = False
    allow_paths_outside_dataset: bool = False  # (ours, command line only) metadata may name files outside

    @property
    def name(self) -> str:
        """Short name for messages and metadata (folder or metadata file name)."""
        import os

        src = self.image_dir or self.metadata_file or "?"
        return os.path.basename(os.path.normpath(src)) or src


@dataclass
class DatasetParams:
    """A group of subsets sharing resolution, buckets and batch size (one ``[[datasets]]`` table)."""

    subsets: List[SubsetParams] = field(default_factory=list)
    resolution: Optional[Tuple[int, int]] = None
    batch_size: int = 1
    enable_bucket: bool = False
    min_bucket_reso: int = 256
    max_bucket_reso: int = 1024
    bucket_reso_steps: int = 64
    bucket_no_upscale: bool = False
    prior_loss_weight: float = 1.0
    validation_split: float = 0.0  # kohya: dataset-level only (validation_split.py)
    validation_seed: Optional[int] = None


@dataclass
class DataOptions:
    """Command-line dataset options (kohya names and defaults; ``data_layout`` and below are ours)."""

    train_data_dir: Optional[str] = None
    reg_data_dir: Optional[str] = None
    dataset_config: Optional[str] = None
    in_json: Optional[str] = None
    resolution: Optional[Union[int, str, Tuple[int, int]]] = None
    train_batch_size: int = 1
    enable_bucket: bool = False
    min_bucket_reso: int = 256
    max_bucket_reso: int = 1024
    bucket_reso_steps: int = 64
    bucket_no_upscale: bool = False
    prior_loss_weight: float = 1.0
    dataset_repeats: int = 1
    caption_extension: str = ".caption"
    shuffle_caption: bool = False
    caption_separator: str = ","
    keep_tokens: int = 0
    keep_tokens_separator: str = ""
    secondary_separator: Optional[str] = None
    enable_wildcard: bool = False
    caption_prefix: Optional[str] = None
    caption_suffix: Optional[str] = None
    caption_dropout_rate: float = 0.0
    caption_dropout_every_n_epochs: int = 0
    caption_tag_dropout_rate: float = 0.0
    flip_aug: bool = False
    color_aug: bool = False
    random_crop: bool = False
    resize_interpolation: Optional[str] = None
    alpha_mask: bool = False
    conditioning_data_dir: Optional[str] = None
    masked_loss: bool = False
    seed: Optional[int] = None
    cache_latents: bool = False
    cache_latents_to_disk: bool = False
    vae_batch_size: int = 1
    cache_text_encoder_outputs: bool = False
    cache_text_encoder_outputs_to_disk: bool = False
    # ours
    data_layout: str = "auto"
    caption_column: str = "text"
    image_column: str = "image"
    instance_prompt: Optional[str] = None
    class_prompt: Optional[str] = None
    stop_on_bad_image: bool = False
    allow_paths_outside_dataset: bool = False
    validation_split: float = 0.0
    validation_seed: Optional[int] = None


SUBSET_FIELDS = tuple(f.name for f in fields(SubsetParams))
DATASET_FIELDS = tuple(f.name for f in fields(DatasetParams) if f.name != "subsets")


def parse_resolution(value, where: str = "resolution") -> Optional[Tuple[int, int]]:
    """512 / "512" / "512,768" / [512, 768] -> (width, height); None stays None.

    The one size parser of the options schema (``parse_size``): "512," and 512.7 are errors here as on
    the command line, never (512, 512) or a silently truncated 512.
    """
    if value is None:
        return None
    try:
        parts = parse_size(value)
    except (TypeError, ValueError):
        parts = (0, 0)
    if min(parts) <= 0:
        raise DatasetError(f"{where} must be a size like 512 or 512,768 (width,height), got {value!r}")
    return parts
