"""Other layouts: metadata.jsonl, image/ + text/ pairs, `datasets` datasets, DreamBooth prompts, kohya json."""

import json
import os

import pytest

from library.data.errors import DatasetError, Issues
from library.data.layouts import detect_layout
from library.data.params import DataOptions
from library.data.prepare import prepare_datasets

from .helpers import make_folder, make_image, write


def _captions(ds):
    return {os.path.basename(r.path or r.key): r.caption for r in ds.records}


def test_metadata_jsonl(tmp_path):
    for i in range(3):
        make_image(tmp_path / f"{i:02d}.jpg", fmt="JPEG")
    lines = [json.dumps({"file_name": f"{i:02d}.jpg", "text": f"photo {i}"}) for i in range(3)]
    lines.append(json.dumps({"file_name": "gone.jpg", "text": "missing"}))
    write(tmp_path / "metadata.jsonl", "\n".join(lines) + "\n")
    assert detect_layout(str(tmp_path)) == "metadata_jsonl"
    issues = Issues(log=False)
    (ds,) = prepare_datasets(DataOptions(train_data_dir=str(tmp_path), resolution=64, dataset_repeats=2), issues)
    assert _captions(ds) == {"00.jpg": "photo 0", "01.jpg": "photo 1", "02.jpg": "photo 2"}
    assert ds.samples_per_epoch == 6
    assert "gone.jpg" in issues.with_code("image_missing")[0].message


def test_metadata_jsonl_caption_column_and_errors(tmp_path):
    make_image(tmp_path / "a.png")
    write(tmp_path / "metadata.jsonl", json.dumps({"file_name": "a.png", "en_text": "hello"}) + "\n")
    with pytest.raises(DatasetError, match='no caption key "text".*did you mean caption_column = "en_text"'):
        prepare_datasets(DataOptions(train_data_dir=str(tmp_path), resolution=64))
    (ds,) = prepare_datasets(DataOptions(train_data_dir=str(tmp_path), resolution=64, caption_column="en_text"))
    assert _captions(ds) == {"a.png": "hello"}
    write(tmp_path / "metadata.jsonl", '{"file_name": "a.png", "text": "x"}\n{oops\n')
    with pytest.raises(DatasetError, match=r"metadata.jsonl line 2 is not valid JSON"):
        prepare_datasets(DataOptions(train_data_dir=str(tmp_path), resolution=64))


def test_image_text_pairs(tmp_path):
    for i in range(3):
        make_image(tmp_path / "image" / f"{i}.png")
    write(tmp_path / "text" / "0.txt", "zero")
    write(tmp_path / "text" / "1.txt", "one")
    assert detect_layout(str(tmp_path)) == "image_text_pairs"
    issues = Issues(log=False)
    (ds,) = prepare_datasets(DataOptions(train_data_dir=str(tmp_path), resolution=64), issues)
    assert _captions(ds) == {"0.png": "zero", "1.png": "one", "2.png": ""}
    assert issues.with_code("caption_missing")


def test_dreambooth_instance_and_class_prompts(tmp_path):
    inst = make_folder(tmp_path, "dog", 3, caption="ignored caption", ext=".caption")
    cls = make_folder(tmp_path, "class", 5)
    opts = DataOptions(train_data_dir=inst, reg_data_dir=cls, instance_prompt="a photo of sks dog", class_prompt="a photo of dog", resolution=64)
    (ds,) = prepare_datasets(opts)
    train = [r for r in ds.records if not r.is_reg]
    reg = [r for r in ds.records if r.is_reg]
    assert {r.caption for r in train} == {"a photo of sks dog"} and {r.caption for r in reg} == {"a photo of dog"}
    assert ds.num_train_images == 3 and sum(r.num_repeats for r in reg) == 3  # 3 of the 5 class images used


def test_flat_reg_folder_without_class_prompt_is_an_error(tmp_path):
    make_folder(tmp_path / "img", "2_dog", 2)
    cls = make_folder(tmp_path, "class", 2)
    with pytest.raises(DatasetError, match="reg_data_dir .* --class_prompt"):
        prepare_datasets(DataOptions(train_data_dir=str(tmp_path / "img"), reg_data_dir=cls, resolution=64))


def test_explicit_images_layout_uses_root_with_caption_files(tmp_path):
    folder = make_folder(tmp_path, "flat", 2, caption="cap {i}", ext=".txt")
    (ds,) = prepare_datasets(DataOptions(train_data_dir=folder, data_layout="images", caption_extension=".txt", resolution=64))
    assert _captions(ds) == {"000.png": "cap 0", "001.png": "cap 1"}


def test_kohya_fine_tune_json(tmp_path):
    folder = make_folder(tmp_path, "imgs", 2)
    meta = {"000": {"caption": "a cat", "tags": "cute, fluffy"}, "001.png": {"tags": "dog"}, "nope": {"caption": "x"}}
    path = write(tmp_path / "meta.json", json.dumps(meta))
    issues = Issues(log=False)
    (ds,) = prepare_datasets(DataOptions(train_data_dir=folder, in_json=path, resolution=64), issues)
    assert _captions(ds) == {"000.png": "a cat,cute, fluffy", "001.png": "dog"}
    assert issues.with_code("image_missing")


def _hf_dataset(n=4):
    datasets = pytest.importorskip("datasets", reason="the `datasets` package is not installed (pip install datasets)")
    import numpy as np
    from PIL import Image

    images = [Image.fromarray(np.full((48 + 8 * i, 64, 3), 40 * i, np.uint8)) for i in range(n)]
    features = datasets.Features({"image": datasets.Image(), "en_text": datasets.Value("string")})
    return datasets.Dataset.from_dict({"image": images, "en_text": [f"caption {i}" for i in range(n)]}, features=features)


def test_hf_save_to_disk(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    ds_hf = _hf_dataset()
    ds_hf.save_to_disk(str(tmp_path / "saved"))
    assert detect_layout(str(tmp_path / "saved")) == "hf_dataset"
    with pytest.raises(DatasetError, match=r"no column 'text' \(caption_column\); did you mean caption_column = \"en_text\""):
        prepare_datasets(DataOptions(train_data_dir=str(tmp_path / "saved"), resolution=64))
    (ds,) = prepare_datasets(DataOptions(train_data_dir=str(tmp_path / "saved"), resolution=64, caption_column="en_text"))
    assert [r.caption for r in ds.records] == [f"caption {i}" for i in range(4)]
    assert [r.size for r in ds.records] == [(64, 48 + 8 * i) for i in range(4)]
    assert ds.records[0].cache_stem.endswith(os.path.join("lorasmith_cache", "00000000"))
    from library.data.dataset import TrainDataset

    batch = TrainDataset([ds], seed=0)[0]
    assert batch["images"].shape[1:] == (3, 64, 64)


def test_hf_parquet_files(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    ds_hf = _hf_dataset(3)
    os.makedirs(tmp_path / "repo" / "data")
    ds_hf.to_parquet(str(tmp_path / "repo" / "data" / "train-00000-of-00001.parquet"))
    assert detect_layout(str(tmp_path / "repo")) == "hf_dataset"
    (ds,) = prepare_datasets(DataOptions(train_data_dir=str(tmp_path / "repo"), resolution=64, caption_column="en_text"))
    assert [r.caption for r in ds.records] == ["caption 0", "caption 1", "caption 2"]
    import pickle

    rec = pickle.loads(pickle.dumps(ds.records[1]))  # DataLoader workers get copies: the table reopens lazily
    assert rec.blob.table._column is None and len(rec.source()) > 0


def test_detect_layout_cases(tmp_path):
    assert detect_layout(str(tmp_path / "nope")) == "missing"
    os.makedirs(tmp_path / "empty")
    assert detect_layout(str(tmp_path / "empty")) == "empty"
    make_folder(tmp_path / "k", "10_x", 1)
    assert detect_layout(str(tmp_path / "k")) == "kohya"
    make_image(tmp_path / "flat" / "a.png")
    assert detect_layout(str(tmp_path / "flat")) == "images"
