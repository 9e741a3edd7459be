"""The schema is complete for the forms that read it (group, help, level on every option), and the dataset
file's tables take the keys kohya's config_util takes (library/config_util.py: DATASET_ASCENDABLE_SCHEMA,
SUBSET_ASCENDABLE_SCHEMA and the subset-distinct keys), from the levels in the schema, not from a copy."""

from dataclasses import fields

from library.data import params
from library.options import BY_NAME, GROUPS, OPTIONS
from library.options.dataset_keys import FILE_ONLY, KEYS, keys_of
from library.options.schema import LEVELS
from library.options.typed import DataOptions

# kohya's dataset-wide keys ([general] and [[datasets]]), plus ours: prior_loss_weight (kohya reads it from the
# command line only) and the ignored kohya keys
KOHYA_DATASET = {"resolution", "batch_size", "enable_bucket", "min_bucket_reso", "max_bucket_reso", "bucket_reso_steps",
                 "bucket_no_upscale", "validation_split", "validation_seed", "network_multiplier"}
# kohya's keys a subset inherits from its dataset and [general] (DreamBooth + dropout + ascendable)
KOHYA_INHERITED = {"num_repeats", "shuffle_caption", "caption_separator", "keep_tokens", "keep_tokens_separator",
                   "secondary_separator", "enable_wildcard", "color_aug", "flip_aug", "face_crop_aug_range",
                   "random_crop", "caption_prefix", "caption_suffix", "token_warmup_min", "token_warmup_step",
                   "custom_attributes", "caption_dropout_every_n_epochs", "caption_dropout_rate",
                   "caption_tag_dropout_rate", "caption_extension", "class_tokens", "cache_info"}
KOHYA_SUBSET_ONLY = {"image_dir", "is_reg", "metadata_file"}


def test_every_option_has_a_group_help_and_a_level():
    for option in (*OPTIONS, *FILE_ONLY):
        assert option.group in GROUPS, option.name
        assert option.help.strip().endswith((".", ")")), option.name
        assert option.level in LEVELS, option.name


def test_the_tables_take_kohyas_keys():
    general, datasets, subsets = keys_of("general"), keys_of("datasets"), keys_of("subsets")
    assert set(general) == set(datasets)
    assert KOHYA_DATASET | KOHYA_INHERITED <= set(datasets)
    assert KOHYA_INHERITED | KOHYA_SUBSET_ONLY <= set(subsets)
    assert not KOHYA_DATASET & set(subsets), "kohya refuses dataset-wide keys inside a subset"
    assert not KOHYA_SUBSET_ONLY & set(datasets), "a folder of images belongs to one subset"
    ours = set(KEYS) - KOHYA_DATASET - KOHYA_INHERITED - KOHYA_SUBSET_ONLY
    assert all(KEYS[k].ours or k in ("prior_loss_weight", "alpha_mask", "conditioning_data_dir",
                                     "resize_interpolation", "debug_dataset", "sample_ratio") for k in ours), ours


def test_renamed_options_keep_their_schema_entry():
    assert KEYS["batch_size"].default == BY_NAME["train_batch_size"].default
    assert KEYS["batch_size"].min == BY_NAME["train_batch_size"].min
    assert KEYS["num_repeats"].min == 0 and BY_NAME["dataset_repeats"].min == 1  # 0 switches a subset off in a file
    assert "train_batch_size" not in KEYS and "dataset_repeats" not in KEYS


def test_the_data_layers_classes_are_made_from_the_schema():
    for cls, levels in ((params.SubsetParams, ("subset", "subset_only")), (params.DatasetParams, ("dataset",))):
        made = {f.name: f.default for f in fields(cls)}
        for key, option in KEYS.items():
            if option.level in levels and option.status == "supported" and key not in ("instance_prompt", "class_prompt"):
                assert made.pop(key) == option.default, (cls.__name__, key)
        assert set(made) <= {"fixed_caption", "allow_paths_outside_dataset", "subsets"}, made
    for f in fields(DataOptions):
        assert f.default == BY_NAME[f.name].default, f.name
    every_key = {o.name for o in OPTIONS if o.level != "run" and o.status == "supported"}
    assert every_key <= {f.name for f in fields(DataOptions)}
