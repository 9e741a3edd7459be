"""The torch Dataset: batches within a bucket, reproducible per (seed, epoch), SDXL sizes, DataLoader."""

import logging

import pytest
import torch

from library.data.dataset import TrainDataset, make_dataloader
from library.data.errors import DatasetError
from library.data.params import DataOptions
from library.data.prepare import prepare_datasets

from .helpers import make_folder, make_image, write


@pytest.fixture
def mixed(tmp_path):
    make_folder(tmp_path / "img", "3_wide", 4, size=(96, 48), caption="wide, a, b, c", ext=".txt")
    make_folder(tmp_path / "img", "2_tall", 3, size=(48, 96), caption="tall, a, b, c", ext=".txt", start_seed=10)
    make_folder(tmp_path / "img", "1_square", 5, size=(64, 64), caption="square, a, b, c", ext=".txt", start_seed=20)
    opts = DataOptions(
        train_data_dir=str(tmp_path / "img"), resolution=64, enable_bucket=True, min_bucket_reso=32, max_bucket_reso=128,
        bucket_reso_steps=16, caption_extension=".txt", train_batch_size=2, flip_aug=True, shuffle_caption=True, keep_tokens=1,
    )
    return prepare_datasets(opts)


def test_batches_within_a_bucket_and_length(mixed):
    (ds,) = mixed
    buckets = dict(ds.buckets)
    assert sum(buckets.values()) == 4 * 3 + 3 * 2 + 5 == 23
    train = TrainDataset(mixed, seed=0)
    assert len(train) == sum(-(-n // 2) for n in buckets.values())
    seen = 0
    for i in range(len(train)):
        b = train[i]
        h, w = b["images"].shape[2:]
        assert (w, h) in buckets
        assert b["images"].min() >= -1 and b["images"].max() <= 1 and b["images"].dtype == torch.float32
        assert all(c.split(", ")[0] in ("wide", "tall", "square") for c in b["captions"])
        assert b["target_sizes_hw"].tolist() == [[h, w]] * len(b["captions"])
        seen += len(b["captions"])
    assert seen == 23


def test_reproducible_per_seed_and_epoch(mixed):
    a, b = TrainDataset(mixed, seed=5), TrainDataset(mixed, seed=5)
    assert a.plan(1) == b.plan(1) and a.plan(2) == b.plan(2)
    assert a.plan(1) != a.plan(2)
    assert a.plan(1) != TrainDataset(mixed, seed=6).plan(1)
    # no history: epoch 3 is the same whether or not epochs 1-2 were visited
    c = TrainDataset(mixed, seed=5)
    assert c.plan(3) == a.plan(3)
    x, y = a[(2, 1)], b[(2, 1)]
    assert x["captions"] == y["captions"] and x["flipped"] == y["flipped"] and torch.equal(x["images"], y["images"])


def test_caption_shuffle_and_dropout_follow_the_runs_seed(tmp_path):
    """One image, one repeat, batch 1: the plan is the same for every seed, so only the caption
    stream's seed can change the caption. Same seed: same captions; another seed: others."""
    make_folder(tmp_path / "img", "1_one", 1, size=(64, 64), caption="a, b, c, d, e, f, g, h", ext=".txt")
    (ds,) = prepare_datasets(DataOptions(train_data_dir=str(tmp_path / "img"), resolution=64, caption_extension=".txt",
                                         shuffle_caption=True, caption_tag_dropout_rate=0.2))

    def captions(seed):
        train = TrainDataset([ds], seed=seed)
        assert all(train.plan(epoch) == [(0, (0,))] for epoch in (1, 2, 3))  # nothing else depends on the seed
        return [train[(epoch, 0)]["captions"][0] for epoch in (1, 2, 3)]

    assert captions(5) == captions(5)
    runs = {tuple(captions(seed)) for seed in range(6)}
    assert len(runs) == 6, runs  # a seed-blind caption stream gives one tuple for all six seeds


def test_flip_and_sdxl_size_conditioning(mixed):
    train = TrainDataset(mixed, seed=1)
    flips = []
    for e in (1, 2, 3):
        train.set_epoch(e)
        for i in range(len(train)):
            b = train[i]
            flips += b["flipped"]
            for k, orig, crop in zip(b["image_keys"], b["original_sizes_hw"].tolist(), b["crop_top_lefts"].tolist()):
                if "wide" in k:
                    assert orig == [48, 96]
                assert crop[0] >= 0 and crop[1] >= 0
    assert any(flips) and not all(flips)


def test_flipped_image_is_mirrored(tmp_path):
    make_folder(tmp_path / "img", "1_a", 1, size=(64, 64))
    (ds,) = prepare_datasets(DataOptions(train_data_dir=str(tmp_path / "img"), resolution=64, flip_aug=True))
    train = TrainDataset([ds], seed=0)
    plain = flipped = None
    for e in range(1, 30):
        b = train[(e, 0)]
        if b["flipped"][0]:
            flipped = b["images"][0]
        else:
            plain = b["images"][0]
    assert torch.equal(torch.flip(plain, [2]), flipped)


def test_dataloader_with_workers_matches_direct(mixed):
    train = TrainDataset(mixed, seed=2)
    train.set_epoch(2)
    direct = [train[i]["image_keys"] for i in range(len(train))]
    for workers in (0, 2):
        loader = make_dataloader(train, num_workers=workers)
        assert [b["image_keys"] for b in loader] == direct


def test_corrupt_image_replaced_with_warning_or_stops(tmp_path, caplog):
    folder = make_folder(tmp_path / "img", "1_a", 3, size=(64, 64))
    bad = f"{folder}/001.png"
    data = open(bad, "rb").read()
    write(bad, data[:80])  # header intact, pixels truncated
    (ds,) = prepare_datasets(DataOptions(train_data_dir=str(tmp_path / "img"), resolution=64))
    train = TrainDataset([ds], seed=0)
    with caplog.at_level(logging.WARNING, logger="lorasmith.data"):
        keys = [k for i in range(len(train)) for k in train[i]["image_keys"]]
    assert len(keys) == 3 and not any(k.endswith("001.png") for k in keys)
    assert any("001.png" in m and "same bucket" in m for m in caplog.messages)
    strict = TrainDataset([ds], seed=0, stop_on_bad_image=True)
    with pytest.raises(DatasetError, match=r"001\.png.*stop_on_bad_image"):
        for i in range(len(strict)):
            strict[i]


def test_color_aug_and_random_crop_run(tmp_path):
    make_folder(tmp_path / "img", "2_a", 2, size=(90, 64))
    (ds,) = prepare_datasets(DataOptions(train_data_dir=str(tmp_path / "img"), resolution=64, color_aug=True, random_crop=True))
    train = TrainDataset([ds], seed=0)
    crops = {tuple(train[(e, i)]["crop_top_lefts"][0].tolist()) for e in range(1, 6) for i in range(len(train))}
    assert len(crops) > 1


def test_metadata_for_lora_files(mixed):
    meta = TrainDataset(mixed, seed=0).metadata()
    assert meta["num_train_images"] == 23 and meta["num_reg_images"] == 0
    d = meta["datasets"][0]
    assert d["dataset_dirs"]["3_wide"] == {"n_repeats": 3, "img_count": 4}
    assert d["tag_frequency"]["1_square"]["square"] == 5
    assert sum(b["count"] for b in d["bucket_info"]["buckets"].values()) == 23


def test_exif_rotated_photo_lands_in_portrait_bucket(tmp_path):
    from PIL import Image

    exif = Image.Exif()
    exif[0x0112] = 6
    make_image(tmp_path / "img" / "1_a" / "p.jpg", (96, 48), fmt="JPEG", exif=exif.tobytes())
    (ds,) = prepare_datasets(DataOptions(train_data_dir=str(tmp_path / "img"), resolution=64, enable_bucket=True, min_bucket_reso=32, max_bucket_reso=128, bucket_reso_steps=16))
    rec = ds.records[0]
    assert rec.size == (48, 96) and rec.bucket_reso[0] < rec.bucket_reso[1]
    b = TrainDataset([ds], seed=0)[0]
    assert b["images"].shape[2] > b["images"].shape[3]
