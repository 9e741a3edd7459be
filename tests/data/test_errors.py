"""Every user-caused problem ends in one clear message naming the file, folder or key (item 7)."""

import os

import pytest

from library.data.errors import DatasetError, Issues
from library.data.params import DataOptions
from library.data.prepare import prepare_datasets

from .helpers import make_folder, make_image, write


def _opts(root, **kw):
    return DataOptions(train_data_dir=str(root), resolution=64, caption_extension=".txt", **kw)


def test_zero_byte_caption_warns_and_uses_class_tokens(tmp_path):
    folder = make_folder(tmp_path, "2_sks cat", 2, caption="a cat", ext=".txt")
    write(os.path.join(folder, "001.txt"), b"")
    issues = Issues(log=False)
    (ds,) = prepare_datasets(_opts(tmp_path), issues)
    assert sorted(r.caption for r in ds.records) == ["a cat", "sks cat"]
    (warn,) = issues.with_code("caption_empty")
    assert "001.txt" in warn.message and folder in warn.message


def test_non_utf8_caption_names_file_and_byte(tmp_path):
    folder = make_folder(tmp_path, "1_cat", 2, caption="ok", ext=".txt")
    write(os.path.join(folder, "001.txt"), "café au lait".encode("cp1252"))
    with pytest.raises(DatasetError) as e:
        prepare_datasets(_opts(tmp_path))
    msg = str(e.value)
    assert os.path.join(folder, "001.txt") in msg and "not UTF-8" in msg and "0xe9" in msg and "re-save it as UTF-8" in msg


def test_missing_folder(tmp_path):
    with pytest.raises(DatasetError, match=r"train_data_dir .*nope does not exist"):
        prepare_datasets(_opts(tmp_path / "nope"))
    with pytest.raises(DatasetError, match=r"reg_data_dir .*nope2 does not exist"):
        make_folder(tmp_path / "img", "1_a", 1)
        prepare_datasets(_opts(tmp_path / "img", reg_data_dir=str(tmp_path / "nope2")))


def test_empty_folder(tmp_path):
    with pytest.raises(DatasetError, match=rf"train_data_dir {tmp_path} holds no images"):
        prepare_datasets(_opts(tmp_path))


def test_image_folder_without_images(tmp_path):
    folder = tmp_path / "img" / "10_cat"
    write(folder / "readme.txt", "no images here")
    issues = Issues(log=False)
    with pytest.raises(DatasetError) as e:
        prepare_datasets(_opts(tmp_path / "img"), issues)
    assert "no training images found" in str(e.value) and str(folder) in str(e.value)
    assert str(folder) in issues.with_code("folder_without_images")[0].message


def test_unknown_config_key(tmp_path):
    path = write(tmp_path / "d.toml", "[[datasets]]\nbatchsize = 2\n[[datasets.subsets]]\nimage_dir = 'x'\n")
    with pytest.raises(DatasetError) as e:
        prepare_datasets(DataOptions(dataset_config=path))
    assert path in str(e.value) and "'batchsize'" in str(e.value) and 'did you mean "batch_size"' in str(e.value)


def test_unreadable_image_skipped_or_stops(tmp_path):
    folder = make_folder(tmp_path, "1_cat", 2)
    write(os.path.join(folder, "002.png"), b"garbage, not a png")
    issues = Issues(log=False)
    (ds,) = prepare_datasets(_opts(tmp_path), issues)
    assert len(ds.records) == 2 and ds.bad_images == [os.path.join(folder, "002.png")]
    assert "002.png" in issues.with_code("image_unreadable")[0].message
    with pytest.raises(DatasetError, match=r"002\.png.*stop_on_bad_image"):
        prepare_datasets(_opts(tmp_path, stop_on_bad_image=True))


def test_resolution_and_bucket_option_errors(tmp_path):
    make_folder(tmp_path, "1_cat", 1)
    with pytest.raises(DatasetError, match="resolution is not set.*--resolution"):
        prepare_datasets(DataOptions(train_data_dir=str(tmp_path)))
    with pytest.raises(DatasetError, match="min_bucket_reso 256 is larger than the resolution"):
        prepare_datasets(_opts(tmp_path, enable_bucket=True))
    with pytest.raises(DatasetError, match="bucket_reso_steps 12 must be a multiple of 8"):
        prepare_datasets(_opts(tmp_path, enable_bucket=True, min_bucket_reso=32, bucket_reso_steps=12))
    with pytest.raises(DatasetError, match="resolution must be a size"):
        prepare_datasets(DataOptions(train_data_dir=str(tmp_path), resolution="big"))


def test_no_upscale_tiny_image_skipped(tmp_path):
    folder = make_folder(tmp_path, "1_cat", 1, size=(64, 64))
    make_image(os.path.join(folder, "tiny.png"), (8, 8))
    issues = Issues(log=False)
    (ds,) = prepare_datasets(_opts(tmp_path, enable_bucket=True, min_bucket_reso=32, max_bucket_reso=128, bucket_reso_steps=16, bucket_no_upscale=True), issues)
    assert len(ds.records) == 1 and "tiny.png" in issues.with_code("image_too_small")[0].message
    assert issues.with_code("image_tiny")


def test_missing_dataset_option():
    with pytest.raises(DatasetError, match="--train_data_dir FOLDER or --dataset_config"):
        prepare_datasets(DataOptions(resolution=64))


def test_option_values_checked(tmp_path):
    make_folder(tmp_path, "1_cat", 1)
    with pytest.raises(DatasetError, match="caption_dropout_rate must be at most 1"):
        prepare_datasets(_opts(tmp_path, caption_dropout_rate=1.5))
    with pytest.raises(DatasetError, match="resize_interpolation must be one of"):
        prepare_datasets(_opts(tmp_path, resize_interpolation="fancy"))
