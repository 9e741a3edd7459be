"""merge_lora (SVD mode) and extract_lora share one LoRA maths: the same delta gives the same clamped factors.

A LoRA baked into a base checkpoint and extracted again (tuned - org) is the same low-rank
delta that merge_lora --new_rank decomposes from the LoRA file, so with the same rank and
--clamp_quantile both tools must write the same up/down: one SVD convention (factor signs
included, which the signed-value quantile depends on) and one quantile.
"""

import torch

from library.models import load_base_model
from networks.lora_file import read_lora_file
from tests.tools.lora_utils import make_lora
from tools import extract_lora, merge_lora


def test_merge_and_extract_clamp_the_same_delta_identically(tiny_path, tmp_path):
    base = str(tiny_path("sd1"))
    lora = make_lora(load_base_model(base), tmp_path / "lora.safetensors", seed=5, dim=4, alpha=4.0, conv_dim=2, std=0.2)
    tuned = tmp_path / "tuned.safetensors"
    assert merge_lora.main(["--sd_model", base, "--models", lora, "--save_to", str(tuned)]) == 0
    extracted, merged = tmp_path / "extracted.safetensors", tmp_path / "merged.safetensors"
    assert extract_lora.main(["--model_org", base, "--model_tuned", str(tuned), "--save_to", str(extracted), "--dim", "2",
                              "--conv_dim", "1", "--clamp_quantile", "0.9", "--min_diff", "0"]) == 0
    assert merge_lora.main(["--models", lora, "--new_rank", "2", "--new_conv_rank", "1", "--clamp_quantile", "0.9",
                            "--save_to", str(merged)]) == 0
    got_e, got_m = read_lora_file(str(extracted))[0], read_lora_file(str(merged))[0]
    assert got_e.keys() == got_m.keys()
    clamped = 0
    for key, want in got_m.items():
        if key.endswith(".alpha"):
            assert float(got_e[key]) == float(want), key
            continue
        scale = float(want.abs().max())
        err = float((got_e[key] - want).abs().max()) / scale
        assert err < 1e-3, (key, err)
        clamped += int((want.abs() == scale).sum()) > 1  # the clamp bound is hit: the quantile took effect
    assert clamped > 0


def test_resize_and_merge_of_one_lora_write_the_same_factors(tiny_path, tmp_path):
    """One LoRA resized, and the same LoRA SVD-merged alone without clamping: the same SVD, split and signs.

    resize keeps the scale in alpha (alpha/r * k); merge folds it into up (alpha = k).
    """
    from tools import resize_lora

    lora = make_lora(load_base_model(str(tiny_path("sd1"))), tmp_path / "lora.safetensors", seed=7, dim=4, alpha=2.0, conv_dim=2)
    resized, merged = tmp_path / "resized.safetensors", tmp_path / "merged.safetensors"
    assert resize_lora.main(["--model", lora, "--save_to", str(resized), "--new_rank", "2", "--new_conv_rank", "1"]) == 0
    assert merge_lora.main(["--models", lora, "--new_rank", "2", "--new_conv_rank", "1", "--clamp_quantile", "1",
                            "--save_to", str(merged)]) == 0
    got_r, got_m = read_lora_file(str(resized))[0], read_lora_file(str(merged))[0]
    assert got_r.keys() == got_m.keys()
    for key in (k for k in got_m if k.endswith(".lora_down.weight")):
        name = key[: -len(".lora_down.weight")]
        rank = got_m[key].shape[0]
        assert float(got_m[f"{name}.alpha"]) == rank
        scale = float(got_r[f"{name}.alpha"]) / rank
        torch.testing.assert_close(got_m[key], got_r[key], rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(got_m[f"{name}.lora_up.weight"], got_r[f"{name}.lora_up.weight"] * scale, rtol=1e-4, atol=1e-6)
