"""library.models.safetensors_read: same tensors as safetensors' own reader, clear errors on damage."""

import json
import struct

import pytest
import torch
from safetensors.torch import load_file, save_file

from library.models import load_base_model
from library.models.errors import ModelLoadError
from library.models.safetensors_read import SafetensorsFile, SafetensorsFormatError


def test_reads_every_dtype_and_shape_exactly_like_safetensors(tmp_path):
    g = torch.Generator().manual_seed(0)
    tensors = {
        "f32": torch.randn(3, 5, generator=g), "f16": torch.randn(7, generator=g).half(),
        "bf16": torch.randn(2, 3, 4, generator=g).bfloat16(), "i64": torch.arange(6).reshape(2, 3),
        "u8": torch.arange(5, dtype=torch.uint8), "bool": torch.tensor([True, False]),
        "scalar": torch.tensor(1.5), "empty": torch.zeros(0, 4),
    }
    path = tmp_path / "t.safetensors"
    save_file(tensors, str(path), metadata={"a": "b"})
    f = SafetensorsFile(path)
    assert f.metadata == {"a": "b"}
    want = load_file(str(path))
    assert sorted(f.keys()) == sorted(want)
    for k, t in want.items():
        got = f.read(k)
        assert got.dtype == t.dtype and got.shape == t.shape and torch.equal(got, t), k
        assert got.data_ptr() % 64 == 0 or got.numel() == 0  # aligned like any torch allocation


def _raw(path, header: dict, data: bytes = b""):
    h = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(h)) + h + data)
    return path


@pytest.mark.parametrize("header, data, says", [
    ({"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}, b"\0" * 8, "truncated"),
    ({"w": {"dtype": "F32", "shape": [10**12], "data_offsets": [0, 16]}}, b"\0" * 16, "claims"),
    ({"w": {"dtype": "F32", "shape": [4], "data_offsets": [8, 4]}}, b"\0" * 16, "claims"),
    ({"w": {"dtype": "X9", "shape": [1], "data_offsets": [0, 4]}}, b"\0" * 4, "dtype"),
    ({"w": {"dtype": "F32", "shape": "4", "data_offsets": [0, 16]}}, b"\0" * 16, "shape"),
    ({"w": [1, 2]}, b"", "not an object"),
    ({"__metadata__": {"a": 1}}, b"", "strings"),
])
def test_damaged_headers_are_refused_before_any_allocation(tmp_path, header, data, says):
    with pytest.raises(SafetensorsFormatError, match=says):
        SafetensorsFile(_raw(tmp_path / "bad.safetensors", header, data))


def test_a_header_length_past_the_end_and_a_short_file_are_refused(tmp_path):
    p = tmp_path / "x.safetensors"
    p.write_bytes(struct.pack("<Q", 10**9) + b"{}")
    with pytest.raises(SafetensorsFormatError, match="header claims"):
        SafetensorsFile(p)
    p.write_bytes(b"\x01\x02")
    with pytest.raises(SafetensorsFormatError, match="shorter"):
        SafetensorsFile(p)


def test_a_checkpoint_cut_short_is_a_one_line_load_error(tiny_ckpt, tmp_path):
    src = tiny_ckpt("sd1", 0)
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(open(src, "rb").read()[:-1000])
    with pytest.raises(ModelLoadError, match=r"cut\.safetensors.*damaged or incomplete.*re-download"):
        load_base_model(cut)
