import json
import time

import pytest
import torch

from library.models import build_models, full_size_configs, tiny_configs
from library.models.configs import check_configs

FAMILIES = ("sd1", "sd2", "sdxl")


@pytest.mark.parametrize("family", FAMILIES)
def test_configs_are_json_and_valid(family):
    for cfg in (full_size_configs(family), tiny_configs(family)):
        assert check_configs(json.loads(json.dumps(cfg))) == cfg


def test_full_size_facts():
    sd1, sd2, sd2v, xl = (full_size_configs("sd1"), full_size_configs("sd2"),
                          full_size_configs("sd2", v_prediction=True), full_size_configs("sdxl"))
    assert sd1["unet"]["cross_attention_dim"] == 768 and sd1["vae"]["scaling_factor"] == 0.18215
    te2 = sd2["text_encoders"][0]["config"]
    assert (te2["num_hidden_layers"], te2["hidden_size"], te2["num_attention_heads"], te2["hidden_act"]) == (23, 1024, 16, "gelu")
    assert sd2v["scheduler"]["prediction_type"] == "v_prediction" and sd2v["unet"]["sample_size"] == 96
    assert xl["unet"]["transformer_layers_per_block"] == [1, 2, 10] and xl["vae"]["scaling_factor"] == 0.13025
    big_g = xl["text_encoders"][1]
    assert big_g["class"] == "CLIPTextModelWithProjection" and big_g["config"]["projection_dim"] == 1280
    assert [t["pad_token"] for t in xl["tokenizers"]] == ["<|endoftext|>", "!"]
    assert xl["scheduler"] == {"num_train_timesteps": 1000, "beta_start": 0.00085, "beta_end": 0.012,
                               "beta_schedule": "scaled_linear", "clip_sample": False, "prediction_type": "epsilon"}


@pytest.mark.parametrize("family,unet_params", [("sd1", 859_520_964), ("sd2", 865_910_724), ("sdxl", 2_567_463_684)])
def test_full_size_models_build_on_meta(family, unet_params):
    c = build_models(full_size_configs(family), device="meta")
    assert c.unet.device.type == "meta"
    # The released UNets' parameter counts.
    assert sum(p.numel() for p in c.unet.parameters()) == unet_params


def test_check_configs_rejects_bad_shapes():
    cfg = tiny_configs("sdxl")
    cfg["text_encoders"] = cfg["text_encoders"][:1]
    with pytest.raises(ValueError, match="2 text encoder"):
        check_configs(cfg)


@pytest.mark.parametrize("family", FAMILIES)
def test_tiny_models_are_seeded_and_fast(family):
    t = time.perf_counter()
    a = build_models(tiny_configs(family), device="cpu", seed=1)
    assert time.perf_counter() - t < 20  # ~0.1 s idle; loose for busy CI
    b = build_models(tiny_configs(family), device="cpu", seed=1)
    state = torch.random.get_rng_state()
    c = build_models(tiny_configs(family), device="cpu", seed=2)
    assert torch.equal(torch.random.get_rng_state(), state)  # the global RNG is left alone
    wa, wb, wc = (m.unet.conv_in.weight for m in (a, b, c))
    assert torch.equal(wa, wb) and not torch.equal(wa, wc)
