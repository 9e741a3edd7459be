"""A LoRA file straight out of training loads in diffusers' load_lora_weights and acts the same."""

import logging

import pytest
import torch

from library.models import load_base_model
from library.options import namespace_from
from library.train.entry import train
from library.inference.pipelines import make_pipeline
from networks.lora import create_network_from_weights
from tests.train.conftest import base_values

pytest.importorskip("peft", reason="diffusers needs peft to load LoRA files")


@pytest.mark.parametrize("family", ["sd1", "sdxl"])
def test_trained_lora_loads_in_diffusers_with_equal_unet_output(family, tiny_ckpt, demo_data, tmp_path, caplog):
    script = "sdxl_train_network" if family == "sdxl" else "train_network"
    values = base_values(tiny_ckpt(family), demo_data, tmp_path / "out", max_train_steps=3, learning_rate=5e-2,
                         network_args=["conv_dim=4", "conv_alpha=2"])
    lora = train(namespace_from(values, script), script).lora

    ours = load_base_model(tiny_ckpt(family))
    net, sd = create_network_from_weights(1.0, lora, ours.vae, ours.text_encoders, ours.unet)
    net.apply_to(ours.text_encoders, ours.unet)
    net.load_weights(sd)
    pipe = make_pipeline(load_base_model(tiny_ckpt(family)), "ddim")
    with caplog.at_level(logging.WARNING):
        pipe.load_lora_weights(str(tmp_path / "out"), weight_name="t.safetensors")
    assert not [r.getMessage() for r in caplog.records if "lora" in r.getMessage().lower()]

    torch.manual_seed(0)
    cfg = ours.unet.config
    x = torch.randn(1, cfg.in_channels, 8, 8)
    ctx = torch.randn(1, 77, cfg.cross_attention_dim)
    added = None
    if family == "sdxl":
        added = {"text_embeds": torch.randn(1, cfg.projection_class_embeddings_input_dim - 6 * cfg.addition_time_embed_dim),
                 "time_ids": torch.tensor([[64.0, 64, 0, 0, 64, 64]])}
    t = torch.tensor([500])
    with torch.no_grad():
        a = ours.unet(x, t, ctx, added_cond_kwargs=added).sample
        b = pipe.unet(x, t, ctx, added_cond_kwargs=added).sample
        base = load_base_model(tiny_ckpt(family)).unet(x, t, ctx, added_cond_kwargs=added).sample
    assert (a - base).abs().max() > 1e-3  # the LoRA changes the output
    torch.testing.assert_close(b, a, atol=1e-4, rtol=1e-4)
