"""load -> save -> load gives identical tensors; saved files have the layout A1111/ComfyUI expect."""

import json
import time

import pytest
import torch
from safetensors import safe_open

from library.models import ModelSaveError, load_base_model, save_base_model
from library.models.single_file import CONFIGS_KEY

from .conftest import FAMILIES, forward_all


def _tensors(path):
    with safe_open(str(path), "pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, f.metadata()


@pytest.mark.parametrize("family", FAMILIES)
def test_load_save_load_is_identical(tiny_path, tmp_path, family):
    first = load_base_model(tiny_path(family))
    out = tmp_path / "again.safetensors"
    save_base_model(first, out)
    second = load_base_model(out)
    for a, b in zip([first.unet, first.vae, *first.text_encoders], [second.unet, second.vae, *second.text_encoders]):
        sa, sb = a.state_dict(), b.state_dict()
        assert sa.keys() == sb.keys()
        assert all(torch.equal(sa[k], sb[k]) for k in sa)
    file_a, _ = _tensors(tiny_path(family))
    file_b, meta = _tensors(out)
    assert file_a.keys() == file_b.keys()
    assert all(torch.equal(file_a[k], file_b[k]) for k in file_a)
    assert json.loads(meta[CONFIGS_KEY]) == first.configs
    assert second.configs == first.configs and second.extras.keys() == first.extras.keys()


ORIGINAL_KEYS = {
    "sd1": [
        "model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn1.to_q.weight",
        "model.diffusion_model.middle_block.1.proj_in.weight",
        "model.diffusion_model.output_blocks.11.1.transformer_blocks.0.ff.net.0.proj.weight",
        "model.diffusion_model.out.2.weight",
        "cond_stage_model.transformer.text_model.encoder.layers.0.self_attn.q_proj.weight",
        "cond_stage_model.transformer.text_model.final_layer_norm.weight",
        "first_stage_model.decoder.up.0.block.0.conv1.weight",
        "first_stage_model.encoder.mid.attn_1.q.weight",
    ],
    "sd2": [
        "model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn1.to_q.weight",
        "cond_stage_model.model.transformer.resblocks.0.attn.in_proj_weight",
        "cond_stage_model.model.transformer.resblocks.3.mlp.c_proj.weight",  # the block SD never uses
        "cond_stage_model.model.positional_embedding",
        "cond_stage_model.model.text_projection",
        "cond_stage_model.model.ln_final.bias",
        "first_stage_model.decoder.up.0.block.0.conv1.weight",
    ],
    "sdxl": [
        "model.diffusion_model.input_blocks.4.1.transformer_blocks.0.attn1.to_q.weight",
        "model.diffusion_model.middle_block.1.transformer_blocks.1.attn2.to_k.weight",
        "model.diffusion_model.label_emb.0.0.weight",
        "model.diffusion_model.output_blocks.2.2.conv.weight",
        "conditioner.embedders.0.transformer.text_model.encoder.layers.0.self_attn.q_proj.weight",
        "conditioner.embedders.1.model.transformer.resblocks.0.attn.in_proj_weight",
        "conditioner.embedders.1.model.text_projection",
        "conditioner.embedders.1.model.logit_scale",
        "first_stage_model.decoder.up.0.block.0.conv1.weight",
    ],
}


@pytest.mark.parametrize("family", FAMILIES)
def test_saved_key_layout(tiny_path, family):
    sd, meta = _tensors(tiny_path(family))
    for key in ORIGINAL_KEYS[family]:
        assert key in sd, key
    prefixes = {k.split(".")[0] for k in sd}
    assert prefixes == {"model", "first_stage_model", "conditioner" if family == "sdxl" else "cond_stage_model"}
    assert not any("position_ids" in k for k in sd)
    assert meta["lorasmith.family"] == family
    if family == "sdxl":  # bigG text_projection is [hidden, projection] in the original layout
        assert sd["conditioner.embedders.1.model.text_projection"].shape == (48, 40)


@pytest.mark.parametrize("family", FAMILIES)
def test_forward_pass_of_loaded_tiny_model(tiny_path, family):
    t = time.perf_counter()
    model = load_base_model(tiny_path(family))
    pred, image, encoded = forward_all(model)
    assert time.perf_counter() - t < 20  # ~0.3 s on an idle 2-core machine; loose for busy CI
    assert pred.shape == (1, 4, 8, 8) and image.shape == (1, 3, 64, 64) and encoded.shape == (1, 4, 8, 8)
    assert torch.isfinite(pred).all() and torch.isfinite(image).all()
    assert model.latent_downscale == 8


def test_loaded_model_facts(tiny_path):
    sd1, xl = load_base_model(tiny_path("sd1")), load_base_model(tiny_path("sdxl"))
    assert (sd1.family, sd1.prediction_type, sd1.vae_scale_factor, sd1.model_version) == ("sd1", "epsilon", 0.18215, "sd_v1")
    assert (xl.family, xl.vae_scale_factor, xl.model_version, len(xl.text_encoders), len(xl.tokenizers)) == (
        "sdxl", 0.13025, "sdxl_base_v1-0", 2, 2)
    assert [t.pad_token for t in xl.tokenizers] == ["<|endoftext|>", "!"]
    assert xl.noise_scheduler.config.beta_schedule == "scaled_linear" and xl.noise_scheduler.config.num_train_timesteps == 1000
    assert sd1.unet.dtype == torch.float32 and not sd1.unet.training
    assert sd1.source == str(tiny_path("sd1")) and len(sd1.content_hash) == 64


def test_save_in_half_precision_and_load_in_bf16(tiny_path, tmp_path):
    model = load_base_model(tiny_path("sd2"))
    out = tmp_path / "half.safetensors"
    save_base_model(model, out, dtype=torch.float16, metadata={"note": "hi"})
    sd, meta = _tensors(out)
    assert {t.dtype for t in sd.values()} == {torch.float16}
    assert meta["note"] == "hi"
    again = load_base_model(out, dtype=torch.bfloat16)
    assert again.unet.dtype == torch.bfloat16 and again.text_encoders[0].dtype == torch.bfloat16
    kept = load_base_model(out, dtype=None)
    assert kept.vae.dtype == torch.float16


def test_save_is_atomic(tiny_path, tmp_path, monkeypatch):
    model = load_base_model(tiny_path("sd1"))
    out = tmp_path / "model.safetensors"
    out.write_bytes(b"old")

    def explode(*args, **kwargs):
        (tmp_path / "model.safetensors.tmp").write_bytes(b"half")
        raise OSError("disk full")

    monkeypatch.setattr("library.models.checkpoint_file.save_file", explode)
    with pytest.raises(OSError):
        save_base_model(model, out)
    assert out.read_bytes() == b"old" and not (tmp_path / "model.safetensors.tmp").exists()
    monkeypatch.undo()
    save_base_model(model, out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.safetensors"]


def test_save_refuses_other_formats(tiny_path, tmp_path):
    model = load_base_model(tiny_path("sd1"))
    with pytest.raises(ModelSaveError, match="safetensors only"):
        save_base_model(model, tmp_path / "model.ckpt")
    with pytest.raises(ModelSaveError, match="does not exist"):
        save_base_model(model, tmp_path / "nope" / "model.safetensors")
