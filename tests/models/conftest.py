"""Tiny checkpoints (the suite-wide tiny_ckpt, made once per session), plus a forward helper (over
tests/tiny_model_calls.py, which the tools' tests share)."""

from pathlib import Path

import pytest
import torch

from tests.tiny_model_calls import te_outputs, unet_output

FAMILIES = ("sd1", "sd2", "sdxl")


@pytest.fixture(scope="session")
def tiny_path(tiny_ckpt):
    """tiny_path(family, v=False) -> Path of a seeded tiny single-file checkpoint (the suite-wide tiny_ckpt)."""

    def get(family, v=False):
        return Path(tiny_ckpt(family, seed=0, v=v))

    return get


@torch.no_grad()
def forward_all(model, seed=0):
    """Run TE -> UNet -> VAE decode -> VAE encode on a tiny model; returns the three outputs."""
    pred = unet_output(model, *te_outputs(model), seed=seed, timestep=10)
    image = model.vae.decode(pred / model.vae_scale_factor).sample
    encoded = model.vae.encode(image).latent_dist.mean
    return pred, image, encoded
