"""Datasets a hostile or careless user brings: rotated PNG/WebP, 16-bit and odd image modes, FIFOs, extreme
shapes, captions in other encodings or with control characters, metadata that points outside the dataset.

Everything goes through the data layer's entry points (``prepare_datasets`` and the torch ``TrainDataset``)
or tools/check_dataset.py, as training and the preflight do.
"""

import dataclasses
import json
import os
import threading

import numpy as np
import pytest
from PIL import Image

from library.data.dataset import TrainDataset
from library.data.errors import DatasetError
from library.data.params import DataOptions
from library.data.prepare import prepare_datasets
from tools import check_dataset

from .helpers import make_folder, make_image, write


def _options(root, **extra):
    values = dict(train_data_dir=str(root), resolution=64, enable_bucket=True, min_bucket_reso=32, max_bucket_reso=128,
                  bucket_reso_steps=16, caption_extension=".txt")
    values.update(extra)
    return DataOptions(**values)


def _rotated(path, fmt):
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees on display: a 96x48 landscape file shows as a 48x96 portrait
    make_image(path, (96, 48), fmt=fmt, exif=exif.tobytes())


@pytest.mark.parametrize("ext, fmt", [(".png", "PNG"), (".webp", "WEBP")])
def test_exif_rotated_png_and_webp_land_in_a_portrait_bucket(tmp_path, ext, fmt):
    _rotated(tmp_path / "img" / "1_a" / f"p{ext}", fmt)
    (ds,) = prepare_datasets(_options(tmp_path / "img"))
    rec = ds.records[0]
    assert rec.size == (48, 96) and rec.bucket_reso[0] < rec.bucket_reso[1]
    item = TrainDataset([ds], seed=0)[0]
    assert tuple(item["images"].shape[2:]) == (rec.bucket_reso[1], rec.bucket_reso[0])


def _grey16(path):
    ramp = (np.arange(48 * 64, dtype=np.float64).reshape(48, 64) / (48 * 64 - 1) * 65535).astype(np.uint16)
    Image.fromarray(ramp).save(path)
    return ramp


def test_16_bit_grey_png_trains_as_its_greys_not_white(tmp_path):
    (tmp_path / "img" / "1_a").mkdir(parents=True)
    ramp = _grey16(str(tmp_path / "img" / "1_a" / "g.png"))
    (ds,) = prepare_datasets(_options(tmp_path / "img", enable_bucket=False))
    pixels = TrainDataset([ds], seed=0)[0]["images"][0]  # [-1, 1]
    mean = float((pixels.mean() + 1) / 2 * 255)
    assert abs(mean - ramp.mean() / 257) < 3  # about mid-grey; PIL's convert("RGB") clips it to 255
    assert float(pixels.min()) < -0.9 and float(pixels.max()) > 0.9


@pytest.mark.parametrize("mode, value, expected", [
    ("LA", (100, 50), 100),
    ("CMYK", (0, 0, 0, 255), 0),
    ("P", None, 200),
    ("1", 1, 255),
])
def test_other_modes_become_the_right_rgb(tmp_path, mode, value, expected):
    folder = tmp_path / "img" / "1_a"
    folder.mkdir(parents=True)
    if mode == "P":
        im = Image.new("RGB", (64, 64), (200, 200, 200)).convert("P")
        im.info["transparency"] = 0
        im.save(folder / "m.png", transparency=0)
    else:
        Image.new(mode, (64, 64), value).save(folder / ("m.jpg" if mode == "CMYK" else "m.png"))
    (ds,) = prepare_datasets(_options(tmp_path / "img", enable_bucket=False))
    pixels = TrainDataset([ds], seed=0)[0]["images"]
    assert abs(float((pixels.mean() + 1) / 2 * 255) - expected) < 2


def test_a_fifo_among_the_images_is_skipped_with_a_warning_instead_of_hanging(tmp_path):
    folder = make_folder(tmp_path / "img", "1_a", 2, caption="a")
    os.mkfifo(os.path.join(folder, "pipe.png"))
    os.mkfifo(os.path.join(folder, "000.txt.tmp"))
    os.remove(os.path.join(folder, "001.txt"))
    os.mkfifo(os.path.join(folder, "001.txt"))  # a caption that is a FIFO
    result = {}

    def scan():
        from library.data.errors import Issues

        issues = Issues(log=False)
        result["ds"] = prepare_datasets(_options(tmp_path / "img"), issues)
        result["issues"] = issues

    worker = threading.Thread(target=scan, daemon=True)
    worker.start()
    worker.join(30)
    assert not worker.is_alive(), "the scan hangs on a FIFO"
    (ds,), issues = result["ds"], result["issues"]
    assert len(ds.records) == 2
    (warning,) = issues.with_code("not_a_regular_file")
    assert "pipe.png" in warning.message and "001.txt" in warning.message


def test_a_65000x1_image_is_skipped_by_the_preflight_naming_it(tmp_path, capsys):
    folder = make_folder(tmp_path / "img", "1_a", 1, caption="a")
    Image.new("L", (65000, 1)).save(os.path.join(folder, "strip.png"))
    code = check_dataset.main(["--train_data_dir", str(tmp_path / "img"), "--resolution", "64", "--caption_extension",
                               ".txt", "--verify_images"])
    out = capsys.readouterr()
    text = out.out + out.err
    assert "strip.png" in text and "65000x1" in text and "aspect ratio" in text
    (ds,) = prepare_datasets(_options(tmp_path / "img"))
    assert [os.path.basename(r.path) for r in ds.records] == ["000.png"]
    with pytest.raises(DatasetError, match="strip.png.*aspect ratio"):
        prepare_datasets(_options(tmp_path / "img", stop_on_bad_image=True))
    assert code in (0, 1)


@pytest.mark.parametrize("encoding", ["utf-8-sig", "utf-16", "utf-16-be", "utf-32", "utf-32-be"])
def test_captions_in_any_bom_marked_encoding(tmp_path, encoding):
    folder = make_folder(tmp_path / "img", "1_a", 1)
    text = "ミク, sks"
    data = text.encode(encoding)
    if encoding == "utf-16-be":
        data = b"\xfe\xff" + data
    if encoding == "utf-32-be":
        data = b"\x00\x00\xfe\xff" + data
    write(os.path.join(folder, "000.txt"), data)
    (ds,) = prepare_datasets(_options(tmp_path / "img"))
    assert ds.records[0].caption == text


@pytest.mark.parametrize("data, words", [
    ("sks shape".encode("utf-16-le"), "NUL characters.*UTF-16 saved without a byte-order mark"),
    (b"sks\x1bshape", "control character"),
    (b"a" * (1024 * 1024 + 1), "more than the 1,048,576 allowed"),
])
def test_bad_caption_bytes_are_an_error_naming_the_file(tmp_path, data, words):
    folder = make_folder(tmp_path / "img", "1_a", 1)
    write(os.path.join(folder, "000.txt"), data)
    with pytest.raises(DatasetError, match=f"000.txt.*{words}"):
        prepare_datasets(_options(tmp_path / "img"))


def test_unicode_line_separators_do_not_cut_a_caption(tmp_path):
    folder = make_folder(tmp_path / "img", "1_a", 3)
    write(os.path.join(folder, "000.txt"), "red\u2028car, fast\x85road\u2029end")
    write(os.path.join(folder, "001.txt"), "\n\nfirst line\r\nsecond line")
    write(os.path.join(folder, "002.txt"), "old mac\rsecond")
    (ds,) = prepare_datasets(_options(tmp_path / "img"))
    captions = [r.caption for r in sorted(ds.records, key=lambda r: r.path)]
    assert captions == ["red car, fast road end", "first line", "old mac"]


def _jsonl(root, file_name):
    make_image(root / "data" / "a.png")
    make_image(root / "outside.png")
    write(root / "data" / "metadata.jsonl", json.dumps({"file_name": file_name, "text": "x"}) + "\n")
    return DataOptions(train_data_dir=str(root / "data"), resolution=64, data_layout="metadata_jsonl",
                       cache_latents_to_disk=True)


@pytest.mark.parametrize("name", ["../outside.png", "ABSOLUTE"])
def test_metadata_paths_outside_the_dataset_are_refused_unless_allowed(tmp_path, name):
    name = str(tmp_path / "outside.png") if name == "ABSOLUTE" else name
    with pytest.raises(DatasetError, match="metadata.jsonl line 1 names .*outside the dataset folder.*"
                                           "--allow_paths_outside_dataset"):
        prepare_datasets(_jsonl(tmp_path, name))
    options = dataclasses.replace(_jsonl(tmp_path, name), allow_paths_outside_dataset=True)
    (ds,) = prepare_datasets(options)
    (rec,) = ds.records
    assert os.path.abspath(rec.path) == str(tmp_path / "outside.png")
    data_root = str(tmp_path / "data")
    assert os.path.commonpath([os.path.abspath(rec.cache_stem), data_root]) == data_root  # caches stay inside


def test_in_json_keys_outside_the_image_folder_are_refused(tmp_path):
    make_image(tmp_path / "img" / "a.png")
    make_image(tmp_path / "elsewhere" / "b.png")
    meta = write(tmp_path / "meta.json", json.dumps({str(tmp_path / "elsewhere" / "b.png"): {"caption": "x"}}))
    with pytest.raises(DatasetError, match="meta.json key .*outside the dataset folder"):
        prepare_datasets(DataOptions(train_data_dir=str(tmp_path / "img"), in_json=meta, resolution=64))
    inside = write(tmp_path / "meta2.json", json.dumps({str(tmp_path / "img" / "a.png"): {"caption": "x"}}))
    (ds,) = prepare_datasets(DataOptions(train_data_dir=str(tmp_path / "img"), in_json=inside, resolution=64))
    assert ds.records[0].caption == "x"  # kohya's full-path keys inside the folder still work


def test_repeats_that_cannot_fit_in_memory_are_refused(tmp_path):
    make_folder(tmp_path / "img", "99999_a", 501, size=(32, 32))  # 50,099,499 samples
    with pytest.raises(DatasetError, match="samples per epoch"):
        prepare_datasets(_options(tmp_path / "img", min_bucket_reso=32, resolution=32))


@pytest.mark.parametrize("text, words", [(["a", "b"], '"text" must be text, got list'),
                                         ("sks\x00dog", "NUL characters")])
def test_metadata_jsonl_captions_are_checked_like_caption_files(tmp_path, text, words):
    make_image(tmp_path / "data" / "a.png")
    write(tmp_path / "data" / "metadata.jsonl", json.dumps({"file_name": "a.png", "text": text}) + "\n")
    with pytest.raises(DatasetError, match=f"metadata.jsonl line 1.*{words}"):
        prepare_datasets(DataOptions(train_data_dir=str(tmp_path / "data"), resolution=64))


def test_metadata_jsonl_caption_with_a_line_separator_is_not_cut(tmp_path):
    make_image(tmp_path / "data" / "a.png")
    write(tmp_path / "data" / "metadata.jsonl", json.dumps({"file_name": "a.png", "text": "red\u2028car\nsecond"}) + "\n")
    (ds,) = prepare_datasets(DataOptions(train_data_dir=str(tmp_path / "data"), resolution=64))
    assert ds.records[0].caption == "red car"


def test_datasets_library_captions_are_checked_like_caption_files(tmp_path, monkeypatch):
    datasets = pytest.importorskip("datasets", reason="the `datasets` package is not installed (pip install datasets)")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    images = [Image.new("RGB", (64, 64), (i * 50, 0, 0)) for i in range(2)]
    features = datasets.Features({"image": datasets.Image(), "text": datasets.Value("string")})
    data = datasets.Dataset.from_dict({"image": images, "text": ["red\u2028car\nsecond", "ok"]}, features=features)
    data.save_to_disk(str(tmp_path / "good"))
    (ds,) = prepare_datasets(DataOptions(train_data_dir=str(tmp_path / "good"), resolution=64))
    assert [r.caption for r in ds.records] == ["red car", "ok"]
    bad = datasets.Dataset.from_dict({"image": images, "text": ["s\x00k\x00s", "ok"]}, features=features)
    bad.save_to_disk(str(tmp_path / "bad"))
    with pytest.raises(DatasetError, match="row 0 'text' holds NUL characters"):
        prepare_datasets(DataOptions(train_data_dir=str(tmp_path / "bad"), resolution=64))
