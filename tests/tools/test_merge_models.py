"""tools/merge_models.py: weighted sum and add difference are exact per tensor, streamed, and refuse mixed families."""

import json

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from library.merge.stream_write import write_streaming
from library.models import load_base_model
from tools import merge_models


def _load(path):
    with safe_open(str(path), "pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, f.metadata()


@pytest.fixture(scope="module")
def sd1_three(tiny_path):
    """Three tiny SD1 checkpoints with different random weights (same architecture)."""
    return [tiny_path("sd1", seed=s) for s in (0, 1, 2)]


def test_weighted_sum_30_percent(sd1_three, tmp_path, capsys):
    a, b, _ = sd1_three
    out = tmp_path / "mix.safetensors"
    assert merge_models.main(["--models", str(a), str(b), "--ratio", "0.3", "--save_to", str(out)]) == 0
    assert "sd1" in capsys.readouterr().out
    ta, tb = _load(a)[0], _load(b)[0]
    merged, meta = _load(out)
    assert merged.keys() == ta.keys()
    for k, va in ta.items():
        want = va.float() * (1 - 0.3) + tb[k].float() * 0.3 if va.is_floating_point() else va
        assert merged[k].dtype == va.dtype and torch.equal(merged[k], want.to(va.dtype)), k
    recipe = json.loads(meta["lorasmith.merge"])
    assert recipe["ratios"] == [0.7, 0.3] and recipe["mode"] == "weighted_sum"
    assert load_base_model(out).family == "sd1"  # our configs travel in the metadata, so the tiny merge loads back


def test_ratios_add_difference_precision_and_unet_only(sd1_three, tmp_path):
    a, b, c = sd1_three
    ta, tb, tc = (_load(p)[0] for p in sd1_three)
    out = tmp_path / "abc.safetensors"
    assert merge_models.main(["--models", str(a), str(b), str(c), "--ratios", "0.5", "0.3", "0.2", "--save_to", str(out)]) == 0
    merged = _load(out)[0]
    for k, va in ta.items():
        want = (va.float() * 0.5 + tb[k].float() * 0.3) + tc[k].float() * 0.2
        assert torch.equal(merged[k], want), k

    diff = tmp_path / "diff.safetensors"
    argv = ["--mode", "add_difference", "--models", str(a), str(b), str(c), "--ratio", "0.5", "--save_to", str(diff), "--save_precision", "fp16"]
    assert merge_models.main(argv) == 0
    merged = _load(diff)[0]
    for k, va in ta.items():
        assert merged[k].dtype == torch.float16
        assert torch.equal(merged[k], (va + (tb[k] - tc[k]) * 0.5).half()), k

    unet = tmp_path / "unet.safetensors"
    assert merge_models.main(["--models", str(a), str(b), "--unet_only", "--save_to", str(unet)]) == 0
    merged = _load(unet)[0]
    for k, va in ta.items():
        want = va * 0.5 + tb[k] * 0.5 if k.startswith("model.diffusion_model.") else va
        assert torch.equal(merged[k], want), k


def test_missing_keys_and_old_clip_layout(sd1_three, tmp_path):
    a, b, _ = sd1_three
    ta, tb = _load(a)[0], _load(b)[0]
    meta = _load(b)[1]
    gone = "first_stage_model.decoder.conv_out.bias"
    old = {}
    for k, v in tb.items():  # B in the pre-`text_model.` CLIP layout, with one VAE tensor missing
        if k == gone:
            continue
        old[k.replace("cond_stage_model.transformer.text_model.", "cond_stage_model.transformer.")] = v
    assert any(k.startswith("cond_stage_model.transformer.encoder.") for k in old)
    b_old = tmp_path / "b_old.safetensors"
    save_file(old, str(b_old), metadata=meta)
    out = tmp_path / "o.safetensors"
    assert merge_models.main(["--models", str(a), str(b_old), "--ratio", "0.25", "--save_to", str(out)]) == 0
    merged = _load(out)[0]
    assert merged.keys() == ta.keys()
    for k, va in ta.items():
        other = va if k == gone else tb[k]  # kohya: a missing key lends its share to the first model
        assert torch.equal(merged[k], va * 0.75 + other * 0.25), k


def test_mixed_families_and_bad_arguments_are_refused(sd1_three, tiny_path, tmp_path, capsys):
    a, b, c = (str(p) for p in sd1_three)
    xl = str(tiny_path("sdxl"))
    lora = tmp_path / "lora.safetensors"
    save_file({"lora_unet_x.lora_down.weight": torch.zeros(1, 2), "lora_unet_x.lora_up.weight": torch.zeros(2, 1)}, str(lora))
    out = str(tmp_path / "o.safetensors")
    cases = [
        (["--models", a, xl, "--save_to", out], [a, "sd1", xl, "sdxl"]),
        (["--models", a, b, c, "--ratio", "0.3", "--save_to", out], ["--ratios"]),
        (["--models", a, b, "--ratios", "1", "--save_to", out], ["--ratios"]),
        (["--mode", "add_difference", "--models", a, b, "--save_to", out], ["exactly 3"]),
        (["--models", a, str(lora), "--save_to", out], ["LoRA"]),
        (["--models", a, b, "--save_to", a], ["input"]),
        (["--models", a, b, "--save_to", str(tmp_path / "o.ckpt")], [".safetensors"]),
        (["--models", a, str(tmp_path / "missing.safetensors"), "--save_to", out], ["missing.safetensors"]),
    ]
    for argv, needles in cases:
        assert merge_models.main(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith("error: ") and err.count("\n") == 1, err
        assert all(n in err for n in needles), err
    assert not (tmp_path / "o.safetensors").exists() and not (tmp_path / "o.safetensors.tmp").exists()


def test_stream_writer_matches_safetensors(tmp_path):
    tensors = {
        "f32": torch.randn(3, 5), "bf16": torch.randn(7).bfloat16(), "f16": torch.randn(2, 1, 1, 3).half(),
        "i64": torch.arange(5), "flag": torch.tensor([True, False, True]), "scalar": torch.tensor(2.5), "empty": torch.zeros(0, 4),
    }
    path = tmp_path / "s.safetensors"
    write_streaming(path, [(k, tuple(v.shape), v.dtype) for k, v in tensors.items()], tensors.__getitem__, {"a": "b"})
    back = load_file(str(path))
    assert back.keys() == tensors.keys() and all(torch.equal(back[k], v) for k, v in tensors.items())
    with safe_open(str(path), "pt") as f:
        assert f.metadata() == {"a": "b"}
    with pytest.raises(RuntimeError, match="announced"):
        write_streaming(tmp_path / "bad.safetensors", [("x", (2,), torch.float32)], lambda k: torch.zeros(3))
    assert not list(tmp_path.glob("bad*"))
