"""dataset_config TOML: kohya tables and keys, fallbacks, clear errors for unknown keys and bad values."""

import os

import pytest

from library.data.dataset_config import datasets_from_config, load_config_file, resolve_datasets
from library.data.errors import DatasetError, Issues
from library.data.params import DataOptions
from library.data.prepare import prepare_datasets

from .helpers import make_folder, write


def _config(tmp_path, text):
    return write(tmp_path / "dataset.toml", text)


def test_fallback_subset_dataset_general_cli(tmp_path):
    a = make_folder(tmp_path, "a", 2)
    b = make_folder(tmp_path, "b", 2)
    path = _config(
        tmp_path,
        f"""
[general]
shuffle_caption = true
caption_extension = ".txt"
keep_tokens = 1

[[datasets]]
resolution = [128, 64]
batch_size = 4
keep_tokens = 2
enable_bucket = true
min_bucket_reso = 64

  [[datasets.subsets]]
  image_dir = '{a}'
  num_repeats = 10
  class_tokens = "sks dog"
  keep_tokens = 3

  [[datasets.subsets]]
  image_dir = '{b}'
  is_reg = true
  class_tokens = "dog"
""",
    )
    opts = DataOptions(dataset_config=path, caption_prefix="cli prefix", shuffle_caption=False, train_batch_size=1, resolution=512)
    (ds,) = resolve_datasets(opts, Issues(log=False))
    assert ds.resolution == (128, 64) and ds.batch_size == 4 and ds.enable_bucket
    s1, s2 = ds.subsets
    assert (s1.num_repeats, s1.keep_tokens, s1.class_tokens, s1.is_reg) == (10, 3, "sks dog", False)
    assert (s2.num_repeats, s2.keep_tokens, s2.is_reg) == (1, 2, True)  # dataset value beats general
    assert s1.shuffle_caption is True  # general beats the command line
    assert s1.caption_extension == ".txt" and s2.caption_prefix == "cli prefix"  # command line fills the rest


def test_cli_resolution_and_batch_size_fill_in(tmp_path):
    a = make_folder(tmp_path, "a", 1)
    path = _config(tmp_path, f"[[datasets]]\n[[datasets.subsets]]\nimage_dir = '{a}'\n")
    (ds,) = resolve_datasets(DataOptions(dataset_config=path, resolution="128,96", train_batch_size=3), Issues(log=False))
    assert ds.resolution == (128, 96) and ds.batch_size == 3


@pytest.mark.parametrize(
    "table, key, suggestion",
    [
        ("[general]\nshufle_caption = true\n[[datasets]]\n[[datasets.subsets]]\nimage_dir='x'\n", "shufle_caption", "shuffle_caption"),
        ("[[datasets]]\nresolusion = 512\n[[datasets.subsets]]\nimage_dir='x'\n", "resolusion", "resolution"),
        ("[[datasets]]\n[[datasets.subsets]]\nimage_dir='x'\nnum_repeat = 3\n", "num_repeat", "num_repeats"),
        ("[[datasets]]\n[[datasets.subsets]]\nimage_dir='x'\ncaption_extention = '.txt'\n", "caption_extention", "caption_extension"),
    ],
)
def test_unknown_key_did_you_mean(tmp_path, table, key, suggestion):
    path = _config(tmp_path, table)
    with pytest.raises(DatasetError) as e:
        resolve_datasets(DataOptions(dataset_config=path), Issues(log=False))
    msg = str(e.value)
    assert path in msg and repr(key) in msg and f'did you mean "{suggestion}"' in msg
    assert ("[general]" in msg) or ("[[datasets]] #1" in msg)


def test_unknown_key_names_the_subset_table(tmp_path):
    path = _config(tmp_path, "[[datasets]]\n[[datasets.subsets]]\nimage_dir='x'\n[[datasets.subsets]]\nimage_dir='y'\nflip_augg = true\n")
    with pytest.raises(DatasetError, match=r"\[\[datasets.subsets\]\] #2 of \[\[datasets\]\] #1.*flip_aug"):
        resolve_datasets(DataOptions(dataset_config=path), Issues(log=False))


def test_wrong_types_are_explained(tmp_path):
    path = _config(tmp_path, "[[datasets]]\n[[datasets.subsets]]\nimage_dir='x'\nnum_repeats = '10'\n")
    with pytest.raises(DatasetError, match="num_repeats must be an integer.*num_repeats = 10"):
        resolve_datasets(DataOptions(dataset_config=path), Issues(log=False))
    path = _config(tmp_path, "[[datasets]]\nresolution = 'big'\n[[datasets.subsets]]\nimage_dir='x'\n")
    with pytest.raises(DatasetError, match="resolution must be a size like 512"):
        resolve_datasets(DataOptions(dataset_config=path), Issues(log=False))


def test_kohya_keys_we_ignore_only_warn(tmp_path):
    a = make_folder(tmp_path, "a", 1)
    issues = Issues(log=False)
    datasets_from_config(
        {"datasets": [{"subsets": [{"image_dir": a, "face_crop_aug_range": [2.0, 4.0], "token_warmup_step": 10}]}]}, "cfg.toml", DataOptions(), issues
    )
    assert {"face_crop_aug_range", "token_warmup_step"} <= {i.message.split("'")[1] for i in issues.with_code("config_key_ignored")}


def test_structure_errors(tmp_path):
    for text, needle in [
        ("[general]\nresolution = 512\n", "no [[datasets]] table"),
        ("[[datasets]]\nresolution = 512\n", "has no [[datasets.subsets]]"),
        ("[[datasets]]\n[[datasets.subsets]]\nnum_repeats = 2\n", "needs image_dir"),
        ("[[datasets]\n", "not valid TOML"),
        ("[general]\n[other]\n", "unknown key 'other' in the top level"),
    ]:
        path = _config(tmp_path, text)
        with pytest.raises(DatasetError) as e:
            resolve_datasets(DataOptions(dataset_config=path), Issues(log=False))
        assert needle in str(e.value) and path in str(e.value)


def test_missing_config_file(tmp_path):
    with pytest.raises(DatasetError, match="does not exist"):
        load_config_file(str(tmp_path / "nope.toml"))


def test_train_data_dir_ignored_with_config(tmp_path):
    a = make_folder(tmp_path, "a", 1)
    path = _config(tmp_path, f"[[datasets]]\nresolution = 64\n[[datasets.subsets]]\nimage_dir = '{a}'\n")
    issues = Issues(log=False)
    resolve_datasets(DataOptions(dataset_config=path, train_data_dir=str(tmp_path)), issues)
    assert issues.with_code("train_data_dir_ignored")


def test_two_datasets_prepared(tmp_path):
    a = make_folder(tmp_path, "a", 3, size=(64, 64))
    b = make_folder(tmp_path, "b", 2, size=(128, 64))
    path = _config(
        tmp_path,
        f"[[datasets]]\nresolution = 64\n[[datasets.subsets]]\nimage_dir = '{a}'\nnum_repeats = 2\nclass_tokens = 'a'\n"
        f"[[datasets]]\nresolution = 128\nbatch_size = 2\n[[datasets.subsets]]\nimage_dir = '{b}'\nclass_tokens = 'b'\n",
    )
    d1, d2 = prepare_datasets(DataOptions(dataset_config=path))
    assert (d1.samples_per_epoch, d1.batches_per_epoch) == (6, 6)
    assert (d2.samples_per_epoch, d2.batches_per_epoch) == (2, 1)
    assert os.path.basename(d2.records[0].subset.image_dir) == "b"


def test_json_config(tmp_path):
    a = make_folder(tmp_path, "a", 1)
    path = write(tmp_path / "c.json", '{"datasets": [{"resolution": 64, "subsets": [{"image_dir": "%s"}]}]}' % a)
    (ds,) = resolve_datasets(DataOptions(dataset_config=path), Issues(log=False))
    assert ds.resolution == (64, 64)
