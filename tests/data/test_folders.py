"""kohya folder layout: NN_name parsing, skipped folders, root images, nesting, captions."""

import os

import pytest

from library.data.dataset_config import datasets_from_options
from library.data.errors import DatasetError, Issues
from library.data.folders import discover_repeat_folders, parse_folder_name, scan_image_folder
from library.data.params import DataOptions, SubsetParams
from library.data.prepare import prepare_datasets

from .helpers import make_folder, make_image, write


@pytest.mark.parametrize(
    "name, expected",
    [
        ("25_Li4mG4ll4gher man", (25, "Li4mG4ll4gher man")),
        ("1_man", (1, "man")),
        ("10_a_b_c", (10, "a_b_c")),  # split on the first "_" only
        ("5", (5, "")),
        ("3_ミク 初音", (3, "ミク 初音")),
        ("abc", None),
        ("x_10", None),
        ("_10", None),
    ],
)
def test_parse_folder_name(name, expected):
    assert parse_folder_name(name) == expected


def test_discover_skips_folders_without_repeats_and_reports_root_images(tmp_path):
    make_folder(tmp_path, "25_Li4mG4ll4gher man", 2)
    make_folder(tmp_path, "1_man", 1)
    make_folder(tmp_path, "abc", 1)
    make_folder(tmp_path, "0_zero", 1)
    make_image(tmp_path / "stray.png")
    issues = Issues(log=False)
    found = discover_repeat_folders(str(tmp_path), False, issues)
    assert [(os.path.basename(p), r, t) for p, r, t in found] == [("1_man", 1, "man"), ("25_Li4mG4ll4gher man", 25, "Li4mG4ll4gher man")]
    codes = {i.code: i for i in issues}
    assert "abc" in codes["folder_without_repeats"].message and "10_abc" in codes["folder_without_repeats"].message
    assert "0_zero" in codes["folder_zero_repeats"].message
    root = codes["images_in_root"]
    assert "NOT used" in root.message and "stray.png" in root.message and str(tmp_path) in root.message


def test_non_ascii_folder_and_file_names(tmp_path):
    folder = make_folder(tmp_path, "4_初音ミク", 0)
    make_image(os.path.join(folder, "画像.png"))
    write(os.path.join(folder, "画像.txt"), "初音ミク, 笑顔")
    ds = prepare_datasets(DataOptions(train_data_dir=str(tmp_path), resolution=64, caption_extension=".txt"))[0]
    (rec,) = ds.records
    assert rec.caption == "初音ミク, 笑顔" and rec.num_repeats == 4 and rec.subset.class_tokens == "初音ミク"


def test_nested_folders_are_not_searched_like_kohya(tmp_path):
    folder = make_folder(tmp_path, "2_cat", 1)
    make_image(os.path.join(folder, "deeper", "hidden.png"))
    issues = Issues(log=False)
    records = scan_image_folder(SubsetParams(image_dir=folder), issues)
    assert [os.path.basename(r.path) for r in records] == ["000.png"]
    (warn,) = issues.with_code("nested_images_unused")
    assert "deeper" in warn.message and "recursive = true" in warn.message
    records = scan_image_folder(SubsetParams(image_dir=folder, recursive=True), Issues(log=False))
    assert sorted(os.path.basename(r.path) for r in records) == ["000.png", "hidden.png"]


def test_extensions_any_case_and_sorted(tmp_path):
    folder = str(tmp_path / "imgs")
    for name in ["b.PNG", "a.Jpg", "c.webp", "d.bmp", "e.gif", "notes.txt"]:
        if name.endswith(".txt"):
            write(os.path.join(folder, name), "x")
        else:
            fmt = {"png": "PNG", "jpg": "JPEG", "webp": "WEBP", "bmp": "BMP", "gif": "GIF"}[name.rsplit(".", 1)[1].lower()]
            make_image(os.path.join(folder, name), fmt=fmt)
    records = scan_image_folder(SubsetParams(image_dir=folder), Issues(log=False))
    assert [os.path.basename(r.path) for r in records] == ["a.Jpg", "b.PNG", "c.webp", "d.bmp"]


def test_captions_default_extension_missing_fallback_and_hint(tmp_path):
    folder = make_folder(tmp_path, "3_sks dog", 3, caption="a dog, photo {i}", ext=".txt")
    issues = Issues(log=False)
    records = scan_image_folder(SubsetParams(image_dir=folder, class_tokens="sks dog"), issues)  # default .caption
    assert [r.caption for r in records] == ["sks dog"] * 3
    assert issues.with_code("caption_missing")[0].count == 3
    hint = issues.with_code("caption_extension_mismatch")[0].message
    assert "--caption_extension .txt" in hint and folder in hint
    records = scan_image_folder(SubsetParams(image_dir=folder, caption_extension="txt"), Issues(log=False))
    assert [r.caption for r in records] == ["a dog, photo 0", "a dog, photo 1", "a dog, photo 2"]


def test_caption_first_nonblank_line_bom_and_wildcard_lines(tmp_path):
    folder = make_folder(tmp_path, "1_x", 1)
    write(os.path.join(folder, "000.caption"), b"\xef\xbb\xbf\n  first line  \nsecond line\n")
    (rec,) = scan_image_folder(SubsetParams(image_dir=folder), Issues(log=False))
    assert rec.caption == "first line"
    (rec,) = scan_image_folder(SubsetParams(image_dir=folder, enable_wildcard=True), Issues(log=False))
    assert rec.caption == "first line\nsecond line"
    write(os.path.join(folder, "000.caption"), "utf16 caption".encode("utf-16"))
    (rec,) = scan_image_folder(SubsetParams(image_dir=folder), Issues(log=False))
    assert rec.caption == "utf16 caption"


def test_images_in_root_only_is_an_error(tmp_path):
    for i in range(3):
        make_image(tmp_path / f"{i}.png")
    with pytest.raises(DatasetError) as e:
        datasets_from_options(DataOptions(train_data_dir=str(tmp_path), resolution=64), Issues(log=False))
    msg = str(e.value)
    assert "3 images directly inside" in msg and str(tmp_path) in msg and "10_" in msg and "--instance_prompt" in msg


def test_folders_without_repeats_only_is_an_error(tmp_path):
    make_folder(tmp_path, "cat", 2)
    with pytest.raises(DatasetError) as e:
        datasets_from_options(DataOptions(train_data_dir=str(tmp_path), resolution=64), Issues(log=False))
    assert "no usable subfolders" in str(e.value) and "10_mysubject" in str(e.value)
