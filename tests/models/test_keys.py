"""Key layouts: unit cases for the VAE and OpenCLIP maps, and full-size key sets on meta models."""

import pytest
import torch

from library.models import assemble, build_models, full_size_configs, original_state_dict
from library.models.errors import UnmappedKey
from library.models.keys_clip import OpenClipKeys
from library.models.keys_vae import vae_from_original, vae_key_from_original, vae_key_to_original
from library.models.single_file import load_original_state_dict

VAE_CASES = [
    ("encoder.down.1.block.0.nin_shortcut.weight", "encoder.down_blocks.1.resnets.0.conv_shortcut.weight"),
    ("encoder.down.2.downsample.conv.bias", "encoder.down_blocks.2.downsamplers.0.conv.bias"),
    ("encoder.mid.block_2.norm1.weight", "encoder.mid_block.resnets.1.norm1.weight"),
    ("encoder.mid.attn_1.norm.bias", "encoder.mid_block.attentions.0.group_norm.bias"),
    ("decoder.mid.attn_1.proj_out.weight", "decoder.mid_block.attentions.0.to_out.0.weight"),
    ("encoder.norm_out.weight", "encoder.conv_norm_out.weight"),
    ("decoder.up.0.block.2.conv2.weight", "decoder.up_blocks.3.resnets.2.conv2.weight"),
    ("decoder.up.3.upsample.conv.weight", "decoder.up_blocks.0.upsamplers.0.conv.weight"),
    ("post_quant_conv.weight", "post_quant_conv.weight"),
    ("decoder.conv_in.bias", "decoder.conv_in.bias"),
]


@pytest.mark.parametrize("original,diffusers", VAE_CASES)
def test_vae_keys(original, diffusers):
    assert vae_key_from_original(original, 4) == diffusers
    assert vae_key_to_original(diffusers, 4) == original


def test_vae_attention_conv_becomes_linear():
    key, t = vae_from_original("encoder.mid.attn_1.q.weight", torch.ones(8, 8, 1, 1), 4)
    assert key == "encoder.mid_block.attentions.0.to_q.weight" and t.shape == (8, 8)
    with pytest.raises(UnmappedKey):
        vae_key_from_original("encoder.down.7.block.0.conv1.weight", 4)


def test_openclip_split_and_fuse():
    keys = OpenClipKeys(num_layers=2, has_projection=True)
    w = torch.arange(3 * 4 * 4, dtype=torch.float32).reshape(12, 4)
    pairs = dict(keys.from_original("transformer.resblocks.1.attn.in_proj_weight", w))
    assert list(pairs) == [f"text_model.encoder.layers.1.self_attn.{n}_proj.weight" for n in "qkv"]
    assert torch.equal(pairs["text_model.encoder.layers.1.self_attn.k_proj.weight"], w[4:8])
    assert torch.equal(keys.to_original(pairs)["transformer.resblocks.1.attn.in_proj_weight"], w)
    p = torch.randn(4, 3)  # [hidden, projection], applied as x @ P
    (name, weight), = keys.from_original("text_projection", p)
    x = torch.randn(2, 4)
    assert name == "text_projection.weight" and torch.allclose(torch.nn.functional.linear(x, weight), x @ p)
    assert keys.classify("transformer.resblocks.2.ln_1.weight") == "extra"
    assert keys.classify("logit_scale") == "extra"


@pytest.fixture(scope="module")
def full_size():
    out = {}
    for family in ("sd1", "sd2", "sdxl"):
        cfg = full_size_configs(family)
        model = assemble(cfg, build_models(cfg, device="meta"))
        out[family] = (model, original_state_dict(model))
    return out


# Key counts of the released files' model tensors (SD1/SDXL files may add position_ids).
@pytest.mark.parametrize("family,count", [("sd1", 1130), ("sd2", 1228), ("sdxl", 2514)])
def test_full_size_original_key_sets(full_size, family, count):
    _, sd = full_size[family]
    assert len(sd) == count
    expect = {
        "sd1": {
            "model.diffusion_model.input_blocks.1.1.proj_in.weight": (320, 320, 1, 1),
            "model.diffusion_model.output_blocks.2.1.conv.weight": (1280, 1280, 3, 3),
            "cond_stage_model.transformer.text_model.encoder.layers.11.mlp.fc2.weight": (768, 3072),
            "first_stage_model.encoder.mid.attn_1.q.weight": (512, 512, 1, 1),
            "first_stage_model.decoder.up.0.block.0.conv1.weight": (128, 256, 3, 3),
        },
        "sd2": {
            "model.diffusion_model.input_blocks.1.1.proj_in.weight": (320, 320),
            "cond_stage_model.model.transformer.resblocks.23.attn.in_proj_weight": (3072, 1024),
            "cond_stage_model.model.positional_embedding": (77, 1024),
            "cond_stage_model.model.text_projection": (1024, 1024),
            "cond_stage_model.model.logit_scale": (),
        },
        "sdxl": {
            "model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn1.to_q.weight": None,
            "model.diffusion_model.input_blocks.4.1.transformer_blocks.1.attn1.to_q.weight": (640, 640),
            "model.diffusion_model.input_blocks.7.1.transformer_blocks.9.attn2.to_k.weight": (1280, 2048),
            "model.diffusion_model.middle_block.1.transformer_blocks.9.ff.net.2.weight": (1280, 5120),
            "model.diffusion_model.output_blocks.2.2.conv.weight": (1280, 1280, 3, 3),
            "model.diffusion_model.label_emb.0.0.weight": (1280, 2816),
            "conditioner.embedders.0.transformer.text_model.final_layer_norm.weight": (768,),
            "conditioner.embedders.1.model.transformer.resblocks.31.attn.in_proj_weight": (3840, 1280),
            "conditioner.embedders.1.model.text_projection": (1280, 1280),
            "conditioner.embedders.1.model.logit_scale": (),
        },
    }[family]
    for key, shape in expect.items():
        if shape is None:
            assert key not in sd  # SDXL's first level has no attention
        else:
            assert tuple(sd[key].shape) == shape, key


@pytest.mark.parametrize("family", ["sd1", "sd2", "sdxl"])
def test_full_size_key_map_round_trips_on_meta(full_size, family):
    model, sd = full_size[family]
    back = load_original_state_dict(sd, family=family, dtype=None, device="meta")
    for a, b in zip([model.unet, model.vae, *model.text_encoders], [back.unet, back.vae, *back.text_encoders]):
        sa, sb = a.state_dict(), b.state_dict()
        assert sa.keys() == sb.keys()
        assert all(sa[k].shape == sb[k].shape for k in sa)
