"""Tiny SD1.5- and SDXL-shaped diffusers/transformers models (real block layout, tiny widths)."""

import pytest
import torch
from diffusers import UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection


def _te_config(hidden, layers, heads, projection_dim=None, act="quick_gelu", pad_token_id=1):
    kw = dict(hidden_size=hidden, intermediate_size=hidden * 2, num_hidden_layers=layers, num_attention_heads=heads,
              vocab_size=49408, max_position_embeddings=77, hidden_act=act, bos_token_id=49406, eos_token_id=49407,
              pad_token_id=pad_token_id)
    if projection_dim:
        kw["projection_dim"] = projection_dim
    return CLIPTextConfig(**kw)


def tiny_sd15(seed=0):
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=16, block_out_channels=(32, 32, 64, 64), layers_per_block=2, norm_num_groups=8,
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
        cross_attention_dim=32, attention_head_dim=4,
    ).eval()
    te = CLIPTextModel(_te_config(32, 2, 4)).eval()
    return unet, [te]


def tiny_sdxl(seed=0):
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=16, block_out_channels=(32, 64, 64), layers_per_block=2, norm_num_groups=8,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        transformer_layers_per_block=[1, 1, 2], attention_head_dim=[2, 4, 4], use_linear_projection=True,
        cross_attention_dim=64, addition_embed_type="text_time", addition_time_embed_dim=8,
        projection_class_embeddings_input_dim=32 + 6 * 8,
    ).eval()
    te1 = CLIPTextModel(_te_config(32, 2, 4)).eval()
    te2 = CLIPTextModelWithProjection(_te_config(32, 2, 4, projection_dim=32, act="gelu", pad_token_id=0)).eval()
    return unet, [te1, te2]


def unet_inputs(unet, batch=1, seed=0):
    g = torch.Generator().manual_seed(seed)
    cfg = unet.config
    x = torch.randn(batch, 4, 16, 16, generator=g)
    ctx = torch.randn(batch, 7, cfg.cross_attention_dim, generator=g)
    kw = {}
    if cfg.addition_embed_type == "text_time":
        kw["added_cond_kwargs"] = {"text_embeds": torch.randn(batch, 32, generator=g), "time_ids": torch.rand(batch, 6, generator=g) * 64}
    return x, torch.tensor([500] * batch), ctx, kw


def run_unet(unet, inputs):
    x, t, ctx, kw = inputs
    with torch.no_grad():
        return unet(x, t, ctx, **kw).sample


def randomize(network, seed=1, std=0.05):
    """Give every LoRA module non-zero weights so its effect is visible."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for lora in network.all_loras:
            for w in (lora.lora_down.weight, lora.lora_up.weight):
                w.copy_(torch.randn(w.shape, generator=g) * std)


@pytest.fixture(params=["sd15", "sdxl"])
def tiny_model(request):
    return request.param, (tiny_sd15 if request.param == "sd15" else tiny_sdxl)()
