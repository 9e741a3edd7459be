"""networks/lora_ranks.py: which rank and alpha each LoRA module gets, decided from module names alone
(no UNet built), and LoRANetwork building exactly the modules the resolver names."""

import pytest

from library.errors import UserError
from networks.lora_ranks import RankResolver

TE = "lora_te_text_model_encoder_layers_0_self_attn_q_proj"
SD_DOWN0_ATTN0 = "lora_unet_down_blocks_0_attentions_0_proj_in"  # kohya block 1
SD_DOWN0_RES0_CONV = "lora_unet_down_blocks_0_resnets_0_conv1"  # block 1, a 3x3 convolution
SD_UP3_ATTN2 = "lora_unet_up_blocks_3_attentions_2_proj_out"  # block 24
SD_MID = "lora_unet_mid_block_attentions_0_proj_in"  # block 12
SDXL_IN4 = "lora_unet_input_blocks_4_1_proj_in"  # block 5


def test_uniform_ranks_and_convolutions_only_with_conv_dim():
    plain = RankResolver.from_network_args(False, 8, 4.0, {})
    assert plain.for_module(TE, True, False) == (8, 4.0)
    assert plain.for_module(SD_DOWN0_ATTN0, True, False) == (8, 4.0)
    assert plain.for_module(SD_DOWN0_RES0_CONV, False, False) == (None, None)
    assert not plain.adapts_conv
    conv = RankResolver.from_network_args(False, 8, 4.0, {"conv_dim": "2"})
    assert conv.adapts_conv
    assert conv.for_module(SD_DOWN0_RES0_CONV, False, False) == (2, 1.0)  # conv_alpha defaults to 1 (kohya)
    assert RankResolver.from_network_args(False, 8, 4.0, {"conv_dim": "2", "conv_alpha": "0.5"}).for_module(
        SD_DOWN0_RES0_CONV, False, False) == (2, 0.5)


def test_block_dims_follow_kohya_block_numbers():
    dims = [str(i) for i in range(25)]
    alphas = [str(i / 2) for i in range(25)]
    ranks = RankResolver.from_network_args(False, 8, 4.0, {"block_dims": ",".join(dims), "block_alphas": ",".join(alphas)})
    assert ranks.for_module(SD_DOWN0_ATTN0, True, False) == (1, 0.5)
    assert ranks.for_module(SD_MID, True, False) == (12, 6.0)
    assert ranks.for_module(SD_UP3_ATTN2, True, False) == (24, 12.0)
    assert ranks.for_module(TE, True, False) == (8, 4.0)  # text encoders keep --network_dim
    assert ranks.for_module(SD_DOWN0_RES0_CONV, False, False) == (None, None)  # no conv_block_dims
    sdxl = RankResolver.from_network_args(True, 8, 4.0, {"block_dims": ",".join(str(i) for i in range(23))})
    assert sdxl.for_module(SDXL_IN4, True, True) == (5, 4.0)
    with pytest.raises(UserError, match="25"):
        RankResolver.from_network_args(False, 8, 4.0, {"block_dims": "4,4"})


def test_a_block_at_learning_rate_zero_gets_no_module():
    weights = [1.0] * 25
    weights[24] = 0.0
    ranks = RankResolver.from_network_args(False, 8, 4.0, {"conv_dim": "2"}, block_lr_weight=weights)
    assert ranks.for_module(SD_UP3_ATTN2, True, False)[0] == 0
    assert ranks.for_module(SD_DOWN0_ATTN0, True, False) == (8, 4.0)
    assert ranks.for_module(SD_DOWN0_RES0_CONV, False, False) == (2, 1.0)


def test_a_saved_file_gives_exactly_its_modules():
    ranks = RankResolver.from_file({SD_DOWN0_ATTN0: 3, SD_DOWN0_RES0_CONV: 2}, {SD_DOWN0_ATTN0: 1.5, SD_DOWN0_RES0_CONV: 2.0})
    assert ranks.adapts_conv
    assert ranks.for_module(SD_DOWN0_ATTN0, True, False) == (3, 1.5)
    assert ranks.for_module(SD_DOWN0_RES0_CONV, False, False) == (2, 2.0)
    assert ranks.for_module(TE, True, False) == (None, None)


def test_network_builds_the_modules_the_resolver_names():
    from networks.lora import create_network
    from tests.networks.conftest import tiny_sd15

    unet, tes = tiny_sd15()
    dims = ["4"] * 25
    dims[1] = "0"
    net = create_network(1.0, 4, 2, None, tes[0], unet, block_dims=",".join(dims), conv_dim="2")
    assert net.all_loras
    for lora in net.all_loras:
        small = lora.lora_down.weight.dim() == 2 or lora.lora_down.kernel_size == (1, 1)
        assert (lora.lora_dim, float(lora.alpha)) == net.ranks.for_module(lora.lora_name, small, False)
    assert not any(m.lora_name.startswith("lora_unet_down_blocks_0_attentions_0_") for m in net.unet_loras)
    assert any(m.lora_dim == 2 for m in net.unet_loras)  # 3x3 convolutions at conv_dim
