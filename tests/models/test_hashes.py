import hashlib

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
