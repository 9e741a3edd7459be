"""The SDXL-layout shapes builder, through tools/make_shapes_model.py --sdxl (fast: smoke budgets).

What the quality case needs of it and cannot check cheaply itself: a deterministic file that our
loader reads as SDXL, and size/crop ids that mean the same thing to the builder, the trainer and the
inference pipeline (a swapped order there is a silent bug: every part would still run).
"""

import random

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from library.data.buckets import size_conditioning
from library.eval import shapes_data
from library.eval.shapes_model_sdxl import (
    NATIVE_TIME_IDS, SMOKE, cropped_render, sdxl_shapes_configs, training_images,
)
from library.inference.pipelines import make_pipeline
from library.models import load_base_model
from library.train.text_encoding import sdxl_time_ids
from tests.eval.test_shapes_tools import _digest
from tools.make_shapes_model import main as make_shapes




@pytest.fixture(scope="module")
def smoke_sdxl(tmp_path_factory):
    out = tmp_path_factory.mktemp("sdxl_shapes") / "a.safetensors"
    assert make_shapes(["--sdxl", "--out", str(out), "--budget", "smoke", "--seed", "1"]) == 0
    return out


def test_sdxl_shapes_model_is_deterministic_and_loads_as_sdxl(smoke_sdxl, tmp_path):
    a, b, c = smoke_sdxl, tmp_path / "b.safetensors", tmp_path / "c.safetensors"
    for out, seed in ((b, 1), (c, 2)):
        assert make_shapes(["--sdxl", "--out", str(out), "--budget", "smoke", "--seed", str(seed)]) == 0
    assert _digest(a) == _digest(b) != _digest(c)
    model = load_base_model(str(a))
    assert (model.family, model.prediction_type, model.vae_scale_factor) == ("sdxl", "epsilon", 0.13025)
    assert [type(te).__name__ for te in model.text_encoders] == ["CLIPTextModel", "CLIPTextModelWithProjection"]
    keys = load_file(str(a)).keys()
    assert "conditioner.embedders.0.transformer.text_model.embeddings.token_embedding.weight" in keys
    assert "conditioner.embedders.1.model.text_projection" in keys  # bigG's projection: the pooled vector
    assert "model.diffusion_model.label_emb.0.0.weight" in keys  # the pooled + size/crop embedding
    # the UNet's extra embedding takes bigG's projection plus six time ids
    cfg = sdxl_shapes_configs()
    te2 = cfg["text_encoders"][1]["config"]
    assert model.unet.add_embedding.linear_1.in_features == te2["projection_dim"] + 6 * cfg["unet"]["addition_time_embed_dim"]


def test_sdxl_v_prediction_build(tmp_path):
    out = tmp_path / "v.safetensors"
    assert make_shapes(["--sdxl", "--v_parameterization", "--out", str(out), "--budget", "smoke"]) == 0
    model = load_base_model(str(out))
    assert (model.family, model.prediction_type) == ("sdxl", "v_prediction")


def test_time_ids_are_native_or_a_real_crop():
    specs, pixels, ids, cropped = training_images(SMOKE, seed=0)
    assert pixels.shape == (len(specs), 3, 64, 64) and ids.shape == (len(specs), 6)
    assert 0 < int(cropped.sum()) < len(specs)
    for row, was_cropped in zip(ids.tolist(), cropped.tolist()):
        if not was_cropped:
            assert tuple(row) == NATIVE_TIME_IDS
        else:
            oh, ow, top, left, th, tw = row
            assert oh == ow and oh in (80, 96) and (th, tw) == (64, 64)
            assert 0 <= top <= oh - 64 and 0 <= left <= ow - 64
    # the crop is the window the ids name, of the upscaled render
    spec = specs[0]
    img, tid = cropped_render(spec, random.Random(5))
    oh, _, top, left, _, _ = tid
    big = shapes_data.render(spec).resize((oh, oh))
    assert np.array_equal(np.asarray(img), np.asarray(big.crop((left, top, left + 64, top + 64))))


def test_builder_trainer_and_pipeline_agree_on_the_native_time_ids(smoke_sdxl):
    """A 64 px training image (no crop) and a 64 px generation must give the ids the builder trained as native."""
    (orig, crop, target) = size_conditioning((64, 64), (64, 64), (64, 64), (0, 0), False)
    trained = sdxl_time_ids([orig], [crop], [target])
    assert trained.tolist() == [list(NATIVE_TIME_IDS)]
    model = load_base_model(str(smoke_sdxl))
    pipe = make_pipeline(model, "ddim")
    proj = model.text_encoders[1].config.projection_dim
    inferred = pipe._get_add_time_ids((64, 64), (0, 0), (64, 64), dtype=torch.float32, text_encoder_projection_dim=proj)
    assert inferred.tolist() == [list(NATIVE_TIME_IDS)]
    # and a cropped training image puts the crop in the middle, as the builder does
    (orig, crop, target) = size_conditioning((96, 80), (96, 80), (64, 64), (7, 3), False)
    assert sdxl_time_ids([orig], [crop], [target]).tolist() == [[80, 96, 3, 7, 64, 64]]


def test_sdxl_build_takes_the_sd1_shapes_vae_from_the_cache(tmp_path):
    """The real build decodes with the SD1 shapes model's VAE (re-normalised for SDXL's 0.13025)."""
    from dataclasses import replace

    from library.eval import shapes_model
    from library.eval.shapes_model_sdxl import build_sdxl_shapes_model

    sd1_path = tmp_path / f"shapes-{shapes_model.source_hash()}" / "shapes_epsilon_seed0.safetensors"
    assert make_shapes(["--out", str(sd1_path), "--budget", "smoke"]) == 0  # stands in for the cached SD1 model
    sd1_path = shapes_model.cached_shapes_model(cache_dir=tmp_path)  # the shipped model wins while it is current
    out = build_sdxl_shapes_model(tmp_path / "xl.safetensors", budget=replace(SMOKE, vae_from_sd1=True),
                                  cache_dir=tmp_path, log=lambda *a: None)
    sd1, xl = load_base_model(str(sd1_path)).vae.state_dict(), load_base_model(str(out)).vae.state_dict()
    # the decoder is the SD1 one; only the latent affine (quant_conv / post_quant_conv) is re-normalised
    assert all(torch.equal(sd1[k], xl[k]) for k in sd1 if k.startswith(("decoder.", "encoder.")))
    assert not torch.equal(sd1["quant_conv.bias"], xl["quant_conv.bias"])
