"""Latent and text-encoder caches: memory/disk, flip, keyed rebuilds, corrupt files, atomic writes, sharding."""

import dataclasses
import glob
import logging
import os

import numpy as np
import pytest
import torch

from library.data.cache import (
    LatentCache,
    latent_cache_for,
    latent_caching_blockers,
    make_vae_encoder,
    read_entry,
    stale_fields,
    write_npz_atomic,
)
from library.data.dataset import TrainDataset
from library.data.errors import DatasetError
from library.data.images import prepare_pixels, to_tensor
from library.data.params import DataOptions
from library.data.prepare import prepare_datasets
from library.data.text_cache import TextEncoderOutputCache

from .helpers import make_folder, write


@pytest.fixture
def prepared(tmp_path):
    make_folder(tmp_path / "img", "2_cat", 3, size=(64, 48), caption="a cat {i}", ext=".txt")
    make_folder(tmp_path / "img", "1_dog", 2, size=(48, 64), caption="a dog", ext=".txt")
    opts = DataOptions(
        train_data_dir=str(tmp_path / "img"), resolution=64, enable_bucket=True, min_bucket_reso=32, max_bucket_reso=128,
        bucket_reso_steps=16, caption_extension=".txt", flip_aug=True,
    )
    return prepare_datasets(opts)


def _cache(vae, key=None, **kw):
    key = key or {"model_hash": "abc", "vae_dtype": "float32"}
    return LatentCache(make_vae_encoder(vae, sample=False), key, progress=False, **kw)


def test_memory_cache_matches_direct_encoding_and_flip(prepared, tiny_vae):
    (ds,) = prepared
    cache = _cache(tiny_vae, vae_batch_size=2)
    stats = cache.cache(ds.records)
    assert stats.encoded == 5 and not stats.failed
    rec = ds.records[0]
    px = prepare_pixels(rec.path, rec.bucket_reso)
    direct = tiny_vae.encode(to_tensor(px.array)[None]).latent_dist.mean[0]
    lat = cache.get(rec)
    assert lat.shape == (4, rec.bucket_reso[1] // 2, rec.bucket_reso[0] // 2)  # the tiny VAE downsamples by 2
    torch.testing.assert_close(lat, direct, atol=1e-5, rtol=1e-4)
    flipped = tiny_vae.encode(torch.flip(to_tensor(px.array), [2])[None]).latent_dist.mean[0]
    torch.testing.assert_close(cache.get(rec, flipped=True), flipped, atol=1e-5, rtol=1e-4)


def test_disk_cache_names_reuse_and_stale_rebuild(prepared, tiny_vae):
    (ds,) = prepared
    cache = _cache(tiny_vae, to_disk=True)
    assert cache.cache(ds.records).encoded == 5
    rec = ds.records[0]
    w, h = rec.size
    assert cache.disk_path(rec) == f"{os.path.splitext(rec.path)[0]}_{w:04d}x{h:04d}_sd.npz" and os.path.isfile(cache.disk_path(rec))
    with np.load(cache.disk_path(rec)) as npz:
        assert {"latents", "latents_flipped", "original_size", "crop_ltrb", "lorasmith_key"} <= set(npz.files)
    again = _cache(tiny_vae, to_disk=True).cache(ds.records)
    assert (again.reused, again.encoded) == (5, 0)

    other_model = _cache(tiny_vae, key={"model_hash": "OTHER", "vae_dtype": "float32"}, to_disk=True)
    assert stale_fields(cache.disk_path(rec), other_model.entry_key(rec)) == ["model_hash"]
    with pytest.raises(DatasetError, match="stale"):
        other_model.get(rec)  # never silently reused
    stats = other_model.cache(ds.records)
    assert (stats.stale, stats.encoded, stats.reused) == (5, 5, 0)
    assert other_model.get(rec).shape[0] == 4

    other_dtype = _cache(tiny_vae, key={"model_hash": "OTHER", "vae_dtype": "float16"}, to_disk=True)
    assert stale_fields(cache.disk_path(rec), other_dtype.entry_key(rec)) == ["vae_dtype"]
    assert other_dtype.cache(ds.records).stale == 5

    sdxl = _cache(tiny_vae, key={"model_hash": "OTHER", "vae_dtype": "float16"}, to_disk=True, arch="sdxl")
    assert sdxl.disk_path(rec).endswith("_sdxl.npz") and sdxl.cache(ds.records).encoded == 5


def test_changed_image_rebuilds(prepared, tiny_vae):
    (ds,) = prepared
    cache = _cache(tiny_vae, to_disk=True)
    cache.cache(ds.records)
    rec = ds.records[0]
    os.utime(rec.path, ns=(1, 1))  # the image was edited
    assert read_entry(cache.disk_path(rec), cache.entry_key(rec))[0] == "stale"
    assert cache.cache(ds.records).encoded == 1


def test_another_resize_interpolation_rebuilds(tmp_path, tiny_vae):
    """The latents hold resized pixels: a cache made with one filter is stale under another."""
    make_folder(tmp_path / "img", "1_cat", 2, size=(96, 64), caption="a cat", ext=".txt")

    def records(interpolation):
        opts = DataOptions(train_data_dir=str(tmp_path / "img"), resolution=64, caption_extension=".txt",
                           resize_interpolation=interpolation)
        return prepare_datasets(opts)[0].records

    cache = _cache(tiny_vae, to_disk=True)
    assert cache.cache(records(None)).encoded == 2
    rec = records("bicubic")[0]
    assert stale_fields(cache.disk_path(rec), cache.entry_key(rec)) == ["resize"]
    assert cache.cache(records("bicubic")).stale == 2


@pytest.mark.parametrize("garbage", [b"", b"PK\x03\x04 broken zip", b"definitely not npz"])
def test_corrupt_cache_file_is_rebuilt_with_warning(prepared, tiny_vae, caplog, garbage):
    (ds,) = prepared
    cache = _cache(tiny_vae, to_disk=True)
    cache.cache(ds.records)
    rec = ds.records[1]
    write(cache.disk_path(rec), garbage)
    with caplog.at_level(logging.WARNING, logger="lorasmith.data"):
        stats = cache.cache(ds.records)
    assert (stats.corrupt, stats.encoded, stats.reused) == (1, 1, 4)
    assert any(cache.disk_path(rec) in m and "rebuilding" in m for m in caplog.messages)
    assert cache.get(rec).shape[0] == 4


def test_atomic_write_leaves_no_partial_file(tmp_path, monkeypatch):
    target = str(tmp_path / "x_sd.npz")

    def boom(f, **arrays):
        f.write(b"half")
        raise RuntimeError("disk full")

    monkeypatch.setattr(np, "savez", boom)
    with pytest.raises(RuntimeError):
        write_npz_atomic(target, {"a": np.zeros(2)})
    assert os.listdir(tmp_path) == []


def test_sharded_across_processes(prepared, tiny_vae):
    (ds,) = prepared
    c0 = _cache(tiny_vae, to_disk=True)
    c1 = _cache(tiny_vae, to_disk=True)
    n0 = c0.cache(ds.records, rank=0, world_size=2).encoded
    n1 = c1.cache(ds.records, rank=1, world_size=2).encoded
    assert (n0, n1) == (3, 2)
    assert all(read_entry(c0.disk_path(r), c0.entry_key(r))[0] == "ok" for r in ds.records)


def test_corrupt_image_skipped_or_stops(prepared, tiny_vae, caplog):
    (ds,) = prepared
    bad = ds.records[2]
    data = bytearray(open(bad.path, "rb").read())
    write(bad.path, bytes(data[:100]))
    cache = _cache(tiny_vae)
    with caplog.at_level(logging.WARNING, logger="lorasmith.data"):
        stats = cache.cache(ds.records)
    assert stats.failed == 1 and cache.failed == [bad.key] and any(bad.path in m for m in caplog.messages)
    train = TrainDataset(prepared, seed=0, latent_cache=cache)
    train.exclude(cache.failed)
    assert all(bad.key not in train[i]["image_keys"] for i in range(len(train)))
    with pytest.raises(DatasetError, match=r"000\.png|001\.png|002\.png"):
        _cache(tiny_vae, stop_on_bad_image=True).cache(ds.records)


def test_dataset_uses_cached_latents(prepared, tiny_vae):
    (ds,) = prepared
    cache = _cache(tiny_vae, to_disk=True)
    cache.cache(ds.records)
    train = TrainDataset(prepared, seed=3, latent_cache=cache)
    for i in range(len(train)):
        b = train[i]
        assert b["images"] is None and b["latents"].shape[1] == 4
        for k, flipped in zip(b["image_keys"], b["flipped"]):
            rec = next(r for r in ds.records if r.key == k)
            assert torch.equal(b["latents"][b["image_keys"].index(k)], cache.get(rec, flipped))


def test_color_aug_and_random_crop_turn_latent_caching_off(tmp_path, caplog):
    make_folder(tmp_path / "img", "1_a", 1)
    make_folder(tmp_path / "img", "1_b", 1)
    opts = DataOptions(train_data_dir=str(tmp_path / "img"), resolution=64, cache_latents=True, vae_batch_size=3)
    (ds,) = prepare_datasets(opts)
    cache = latent_cache_for(opts, [ds], lambda x: x, {"model_hash": "m"})
    assert isinstance(cache, LatentCache) and cache.vae_batch_size == 3 and not cache.to_disk
    ds.subsets[1].subset = dataclasses.replace(ds.subsets[1].subset, random_crop=True)
    with caplog.at_level(logging.WARNING, logger="lorasmith.data"):
        assert latent_cache_for(opts, [ds], lambda x: x, {}) is None
    assert latent_caching_blockers([ds]) == ["1_b"] and any("latent caching is off" in m and "1_b" in m for m in caplog.messages)
    opts = dataclasses.replace(opts, cache_latents=False)
    assert latent_cache_for(opts, [ds], lambda x: x, {}) is None


def _fake_te(calls):
    def encode(captions):
        calls.append(list(captions))
        n = len(captions)
        return {"hidden1": torch.arange(n * 6, dtype=torch.float32).view(n, 3, 2), "pool2": torch.ones(n, 5) * len(captions[0])}

    return encode


def test_text_encoder_cache_keyed_by_caption(prepared):
    (ds,) = prepared
    calls = []
    te = TextEncoderOutputCache(_fake_te(calls), {"te_hash": "h1"}, to_disk=True, batch_size=2, progress=False)
    assert te.cache(ds.records).encoded == 5 and len(calls) == 3
    rec = ds.records[0]
    assert os.path.isfile(os.path.splitext(rec.path)[0] + "_te_outputs.npz")
    assert te.get(rec)["hidden1"].shape == (3, 2)
    assert te.cache(ds.records).reused == 5
    write(os.path.splitext(rec.path)[0] + ".txt", "a different caption")
    rec.caption = "a different caption"
    assert te.cache(ds.records).stale == 1
    other = TextEncoderOutputCache(_fake_te(calls), {"te_hash": "h2"}, to_disk=True, progress=False)
    assert other.cache(ds.records).stale == 5
    train = TrainDataset(prepared, seed=0, text_cache=other)
    b = train[0]
    assert b["text_encoder_outputs"]["pool2"].shape == (len(b["captions"]), 5)


def test_text_encoder_cache_refuses_changing_captions(tmp_path):
    make_folder(tmp_path / "img", "1_a", 1)
    (ds,) = prepare_datasets(DataOptions(train_data_dir=str(tmp_path / "img"), resolution=64, shuffle_caption=True))
    te = TextEncoderOutputCache(_fake_te([]), {}, progress=False)
    with pytest.raises(DatasetError, match="1_a.*shuffle_caption"):
        te.cache(ds.records)


def test_no_temp_files_left(prepared, tiny_vae):
    (ds,) = prepared
    _cache(tiny_vae, to_disk=True).cache(ds.records)
    folder = os.path.dirname(ds.records[0].path)
    assert not glob.glob(os.path.join(folder, ".tmp-*"))
