import hashlib
import json
import os

from safetensors.torch import save, save_file
import torch

from library.models.hashes import a1111_legacy_hash, content_key, safetensors_data_sha256, sha256_file


def test_sha256_and_legacy_hash(tmp_path):
    data = bytes(range(256)) * 8192  # 2 MiB
    f = tmp_path / "m.bin"
    f.write_bytes(data)
    assert sha256_file(f) == hashlib.sha256(data).hexdigest()
    assert a1111_legacy_hash(f) == hashlib.sha256(data[0x100000:0x110000]).hexdigest()[:8]


def test_safetensors_data_hash_ignores_metadata(tmp_path):
    t = {"w": torch.arange(10.0)}
    a, b = save(t, metadata={"x": "1"}), save(t, metadata={"x": "2"})
    assert a != b and safetensors_data_sha256(a) == safetensors_data_sha256(b)
    p = tmp_path / "l.safetensors"
    p.write_bytes(a)
    assert safetensors_data_sha256(p) == safetensors_data_sha256(a)


def test_content_key_tracks_weights_not_names(tmp_path):
    a, b = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    save_file({"w": torch.zeros(4)}, str(a))
    save_file({"w": torch.zeros(4)}, str(b))
    assert content_key(a) == content_key(b)  # a renamed copy keeps its caches
    save_file({"w": torch.ones(4)}, str(b))
    assert content_key(a) != content_key(b)
    (tmp_path / "unet").mkdir()
    save_file({"w": torch.zeros(4)}, str(tmp_path / "unet" / "m.safetensors"))
    before = content_key(tmp_path)
    (tmp_path / "unet" / "config.json").write_text("{}")
    assert content_key(tmp_path) != before


def test_the_full_sha256_is_remembered_per_path_size_and_mtime(tmp_path, monkeypatch):
    from library.models import hashes

    f = tmp_path / "base.safetensors"
    f.write_bytes(b"a" * 5000)
    calls = []
    real = hashes.sha256_file
    monkeypatch.setattr(hashes, "sha256_file", lambda p: calls.append(p) or real(p))
    cache = tmp_path / "cache"
    first = hashes.sha256_file_cached(f, cache)
    assert first == real(f) and len(calls) == 1
    assert hashes.start_sha256(f, cache).result() == first and len(calls) == 1  # from the cache file
    f.write_bytes(b"b" * 5000)
    os.utime(f, ns=(10**18, 10**18))
    assert hashes.sha256_file_cached(f, cache) == real(f) != first and len(calls) == 2
    assert len(json.loads((cache / hashes.SHA256_CACHE_FILE).read_text())) == 1  # the stale entry was replaced


def test_an_unusable_hash_cache_only_costs_hashing_again(tmp_path):
    from library.models import hashes

    f = tmp_path / "base.safetensors"
    f.write_bytes(b"x" * 100)
    blocker = tmp_path / "not_a_dir"
    blocker.write_text("{garbage")
    assert hashes.sha256_file_cached(f, blocker) == hashes.sha256_file(f)
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / hashes.SHA256_CACHE_FILE).write_text("[1, 2]")
    assert hashes.sha256_file_cached(f, tmp_path / "c") == hashes.sha256_file(f)


def test_kohya_model_hashes_use_the_known_sha256_or_the_cache(tmp_path):
    from library.train.metadata import model_file_hashes

    f = tmp_path / "base.safetensors"
    f.write_bytes(bytes(range(256)) * 8192)
    legacy, full = model_file_hashes(str(f))
    assert full == sha256_file(f) and legacy == a1111_legacy_hash(f)
    assert model_file_hashes(str(f), "ab" * 32) == (legacy, "ab" * 32)
    assert model_file_hashes(str(tmp_path)) == ("", "")  # a diffusers folder has no file hash
