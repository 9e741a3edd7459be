"""Tiny checkpoints (the suite-wide tiny_ckpt, made once per session), plus a forward helper."""

from pathlib import Path

import pytest
import torch

FAMILIES = ("sd1", "sd2", "sdxl")


@pytest.fixture(scope="session")
def tiny_path(tiny_ckpt):
    """tiny_path(family, v=False) -> Path of a seeded tiny single-file checkpoint (the suite-wide tiny_ckpt)."""

    def get(family, v=False):
        return Path(tiny_ckpt(family, seed=0, v=v))

    return get


def encode_prompt(model, prompt="a photo of a cat"):
    """(context, added_cond_kwargs) the way SD1/SD2 (last layer) and SDXL (penultimate, pooled) condition."""
    ids = [
        tok([prompt], padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids
        for tok in model.tokenizers
    ]
    outs = [te(i, output_hidden_states=True) for te, i in zip(model.text_encoders, ids)]
    if model.is_sdxl:
        ctx = torch.cat([outs[0].hidden_states[-2], outs[1].hidden_states[-2]], dim=-1)
        time_ids = torch.tensor([[64.0, 64.0, 0.0, 0.0, 64.0, 64.0]])
        return ctx, {"text_embeds": outs[1].text_embeds, "time_ids": time_ids}
    return outs[0].last_hidden_state, None


@torch.no_grad()
def forward_all(model, seed=0):
    """Run TE -> UNet -> VAE decode -> VAE encode on a tiny model; returns the three outputs."""
    ctx, added = encode_prompt(model)
    latents = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(seed))
    pred = model.unet(latents, torch.tensor([10]), encoder_hidden_states=ctx, added_cond_kwargs=added).sample
    image = model.vae.decode(pred / model.vae_scale_factor).sample
    encoded = model.vae.encode(image).latent_dist.mean
    return pred, image, encoded
