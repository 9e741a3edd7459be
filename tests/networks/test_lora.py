"""The LoRA network's contract: targeting, naming, math, merge, files, errors (docs/formats.md)."""

import copy
import os
import re

import pytest
import torch
from safetensors import safe_open

from library.errors import UserError
from networks import lora as lora_mod
from networks.lora import create_network, create_network_from_weights
from networks.lora_file import LoRAFileError, safetensors_hashes
from tests.networks.conftest import randomize, run_unet, tiny_sd15, tiny_sdxl, unet_inputs

KEY_RE = re.compile(r"^lora_(unet|te|te1|te2)_[a-z0-9_]+\.(lora_down\.weight|lora_up\.weight|alpha)$")


def _te_out(te, ids=None):
    ids = torch.tensor([[49406, 320, 1125, 539, 320, 2368, 49407]]) if ids is None else ids
    with torch.no_grad():
        return te(ids).last_hidden_state


def _network(unet, tes, **kw):
    te = tes if len(tes) > 1 else tes[0]
    net = create_network(1.0, kw.pop("dim", 4), kw.pop("alpha", 2), None, te, unet, **kw)
    net.apply_to(te, unet)
    return net


def test_fresh_network_changes_nothing(tiny_model):
    _, (unet, tes) = tiny_model
    inputs = unet_inputs(unet)
    before = run_unet(unet, inputs)
    te_before = [_te_out(te) for te in tes]
    _network(unet, tes, conv_dim=4, conv_alpha=1)
    assert torch.equal(run_unet(unet, inputs), before)
    for te, ref in zip(tes, te_before):
        assert torch.equal(_te_out(te), ref)


def test_merge_equals_injected_forward_and_unmerge_restores(tiny_model):
    _, (unet, tes) = tiny_model
    inputs = unet_inputs(unet)
    base = run_unet(unet, inputs)
    base_weights = copy.deepcopy(unet.state_dict())
    net = _network(unet, tes, conv_dim=4, conv_alpha=2)
    randomize(net)
    injected = run_unet(unet, inputs)
    te_injected = [_te_out(te) for te in tes]
    assert not torch.allclose(injected, base, atol=1e-4)
    net.merge_to()
    assert torch.allclose(run_unet(unet, inputs), injected, atol=1e-5)
    for te, ref in zip(tes, te_injected):
        assert torch.allclose(_te_out(te), ref, atol=1e-5)
    net.unmerge()
    assert torch.allclose(run_unet(unet, inputs), injected, atol=1e-5)  # hooks active again
    net.restore()
    assert torch.allclose(run_unet(unet, inputs), base, atol=1e-5)
    for k, v in unet.state_dict().items():
        assert torch.allclose(v, base_weights[k], atol=1e-6), k


def test_multiplier_scales_the_delta():
    unet, tes = tiny_sd15()
    inputs = unet_inputs(unet)
    base = run_unet(unet, inputs)
    net = _network(unet, tes)
    randomize(net, std=0.01)
    full = run_unet(unet, inputs) - base
    net.set_multiplier(0.5)
    half = run_unet(unet, inputs) - base
    assert torch.allclose(half, full * 0.5, atol=2e-3 * full.abs().max().item())
    net.set_multiplier(0.0)
    assert torch.allclose(run_unet(unet, inputs), base, atol=1e-6)


def test_alpha_scaling_and_init():
    unet, tes = tiny_sd15()
    net = _network(unet, tes, dim=8, alpha=4)
    m = net.unet_loras[0]
    assert m.scale == 0.5 and float(m.alpha) == 4.0
    assert torch.count_nonzero(m.lora_up.weight) == 0 and torch.count_nonzero(m.lora_down.weight) > 0
    zero_alpha = _network(*tiny_sd15(), dim=8, alpha=0)
    assert zero_alpha.unet_loras[0].scale == 1.0


def test_names_follow_kohya(tiny_model):
    family, (unet, tes) = tiny_model
    net = _network(unet, tes, conv_dim=4)
    names = {m.lora_name for m in net.all_loras}
    if family == "sd15":
        assert "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q" in names
        assert "lora_unet_down_blocks_0_attentions_0_proj_in" in names
        assert "lora_unet_mid_block_attentions_0_transformer_blocks_0_attn1_to_out_0" in names
        assert "lora_unet_up_blocks_1_attentions_0_transformer_blocks_0_ff_net_0_proj" in names
        assert "lora_unet_down_blocks_0_resnets_0_conv1" in names
        assert "lora_te_text_model_encoder_layers_0_self_attn_q_proj" in names
        assert "lora_te_text_model_encoder_layers_1_mlp_fc2" in names
    else:
        assert "lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q" in names
        assert "lora_unet_middle_block_1_transformer_blocks_0_attn2_to_k" in names
        assert "lora_unet_output_blocks_0_1_proj_out" in names
        assert "lora_unet_input_blocks_1_0_in_layers_2" in names
        assert "lora_unet_input_blocks_3_0_op" in names
        assert "lora_unet_output_blocks_2_2_conv" in names
        assert "lora_unet_output_blocks_8_0_skip_connection" in names
        assert "lora_te1_text_model_encoder_layers_0_self_attn_k_proj" in names
        assert "lora_te2_text_model_encoder_layers_1_mlp_fc1" in names
        assert not any(n.startswith(("lora_unet_time_embed", "lora_unet_out_", "lora_unet_label_emb")) for n in names)
        assert not any("down_blocks" in n or "up_blocks" in n for n in names)


def test_saved_file_format(tmp_path, tiny_model):
    _, (unet, tes) = tiny_model
    net = _network(unet, tes, conv_dim=4, conv_alpha=1)
    randomize(net)
    path = tmp_path / "out.safetensors"
    net.save_weights(str(path), torch.float16, {"ss_network_dim": 4, "ss_output_name": "out"})
    assert not list(tmp_path.glob("*.tmp"))
    with safe_open(str(path), "pt") as f:
        keys = list(f.keys())
        meta = f.metadata()
        assert f.get_tensor(keys[0]).dtype == torch.float16
    assert all(KEY_RE.match(k) for k in keys), [k for k in keys if not KEY_RE.match(k)][:5]
    modules = {k.split(".")[0] for k in keys}
    for m in modules:
        for s in ("lora_down.weight", "lora_up.weight", "alpha"):
            assert f"{m}.{s}" in keys
    assert len(modules) == len(net.all_loras)
    assert meta["ss_network_dim"] == "4" and len(meta["sshs_model_hash"]) == 64 and len(meta["sshs_legacy_hash"]) == 8


def test_hash_covers_tensor_data_not_metadata():
    t = {"a.lora_down.weight": torch.ones(2, 2)}
    assert safetensors_hashes(t, {"ss_x": "1"}) == safetensors_hashes(t, {"ss_x": "2", "modelspec.title": "y"})
    assert safetensors_hashes(t, {})[0] != safetensors_hashes({"a.lora_down.weight": torch.zeros(2, 2)}, {})[0]


def test_create_from_weights_round_trip(tmp_path, tiny_model):
    _, (unet, tes) = tiny_model
    inputs = unet_inputs(unet)
    ref_unet, ref_tes = copy.deepcopy(unet), copy.deepcopy(tes)
    net = _network(unet, tes, dim=4, alpha=2, conv_dim=2, conv_alpha=1)
    randomize(net)
    expected = run_unet(unet, inputs)
    path = tmp_path / "l.safetensors"
    net.save_weights(str(path), None, {})
    te = ref_tes if len(ref_tes) > 1 else ref_tes[0]
    net2, sd = create_network_from_weights(1.0, str(path), None, te, ref_unet)
    net2.apply_to(te, ref_unet)
    net2.load_weights(str(path))
    assert {m.lora_name: (m.lora_dim, float(m.alpha)) for m in net2.all_loras} == {
        m.lora_name: (m.lora_dim, float(m.alpha)) for m in net.all_loras
    }
    assert torch.allclose(run_unet(ref_unet, inputs), expected, atol=1e-5)


def test_file_without_alpha_means_alpha_equals_rank(tmp_path):
    unet, tes = tiny_sd15()
    net = _network(unet, tes, dim=4, alpha=1)
    sd = {k: v for k, v in net.lora_state_dict().items() if not k.endswith(".alpha")}
    net2, _ = create_network_from_weights(1.0, None, None, tes[0], unet, weights_sd=sd)
    assert all(m.scale == 1.0 for m in net2.all_loras)


def test_sdxl_lora_on_sd15_is_a_clear_error(tmp_path):
    unet, tes = tiny_sdxl()
    net = _network(unet, tes)
    path = tmp_path / "xl.safetensors"
    net.save_weights(str(path), None, {})
    unet15, tes15 = tiny_sd15()
    with pytest.raises(LoRAFileError) as e:
        create_network_from_weights(1.0, str(path), None, tes15[0], unet15)
    msg = str(e.value)
    assert "\n" not in msg and str(path) in msg and "SDXL" in msg


def test_truncated_file_is_a_clear_error(tmp_path):
    unet, tes = tiny_sd15()
    net = _network(unet, tes)
    path = tmp_path / "t.safetensors"
    net.save_weights(str(path), None, {})
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(LoRAFileError) as e:
        create_network_from_weights(1.0, str(path), None, tes[0], unet)
    assert "\n" not in str(e.value) and str(path) in str(e.value) and "truncated" in str(e.value)


def test_pickle_lora_is_refused(tmp_path):
    path = tmp_path / "x.pt"
    torch.save({"a": torch.ones(1)}, path)
    unet, tes = tiny_sd15()
    with pytest.raises(LoRAFileError, match="only .safetensors"):
        create_network_from_weights(1.0, str(path), None, tes[0], unet)


def test_dropouts_only_in_training():
    unet, tes = tiny_sd15()
    net = _network(unet, tes, neuron_dropout=0.5, rank_dropout=0.5, module_dropout=0.5)
    randomize(net)
    m = net.unet_loras[0]
    assert (m.dropout, m.rank_dropout, m.module_dropout) == (0.5, 0.5, 0.5)
    inputs = unet_inputs(unet)
    net.eval()
    a, b = run_unet(unet, inputs), run_unet(unet, inputs)
    assert torch.equal(a, b)
    net.train()
    torch.manual_seed(0)
    c = run_unet(unet, inputs)
    assert not torch.allclose(a, c)


@pytest.mark.parametrize("p", [0.25, 0.5])
def test_rank_dropout_masks_ranks_and_rescales_by_one_over_keep(p):
    """kohya: drop whole ranks of the down output and scale the rest by 1/(1-p), so the expected
    delta equals the eval-mode delta. Checked exactly (same RNG draw) and on average over a batch."""
    from networks.lora_math import rank_dropout_mask

    torch.manual_seed(0)
    base = torch.nn.Linear(6, 5)
    m = lora_mod.LoRAModule("lora_unet_x", base, multiplier=0.7, lora_dim=8, alpha=2, rank_dropout=p)
    torch.nn.init.normal_(m.lora_up.weight)
    m.apply_to()
    x = torch.randn(4000, 3, 6)  # [batch, tokens, in]: the mask is per sample and rank, shared over tokens
    x[:] = x[:1]  # every sample the same input, so the batch mean estimates the expectation
    m.eval()
    with torch.no_grad():
        org = torch.nn.functional.linear(x, base.weight, base.bias)
        full = m(x) - org
        m.train()
        torch.manual_seed(1)
        dropped = m(x) - org
        torch.manual_seed(1)
        keep = rank_dropout_mask(x.size(0), 8, p, 3, "cpu")
    down = m.lora_down(x) * keep
    expected = down @ m.lora_up.weight.T * (0.7 * 2 / 8) / (1 - p)
    torch.testing.assert_close(dropped, expected, rtol=1e-5, atol=1e-5)
    assert 0 < keep.float().mean() < 1 and not torch.allclose(dropped[0], full[0])
    torch.testing.assert_close(dropped.mean(0), full.mean(0), rtol=0.05, atol=0.05 * full.abs().max().item())


def test_block_dims_and_lr_weights():
    unet, tes = tiny_sd15()
    dims = ["4"] * 25
    dims[1] = "0"  # no module in down block 0, first attention
    net = _network(unet, tes, block_dims=",".join(dims), down_lr_weight="zeros+0.5", up_lr_weight="1,1,1,1,1,1,1,1,1,1,1,0")
    names = {m.lora_name for m in net.unet_loras}
    assert not any(n.startswith("lora_unet_down_blocks_0_attentions_0_") for n in names)
    assert any(n.startswith("lora_unet_down_blocks_0_attentions_1_") for n in names)
    assert not any(n.startswith("lora_unet_up_blocks_3_attentions_2_") for n in names)  # lr weight 0 -> no module
    groups, desc = net.prepare_optimizer_params(1e-5, 1e-4, 1e-3)
    by_desc = dict(zip(desc, groups))
    assert by_desc["unet_block2"]["lr"] == pytest.approx(0.5e-4)
    assert by_desc["textencoder"]["lr"] == 1e-5
    with pytest.raises(UserError, match="25"):
        _network(*tiny_sd15(), block_dims="4,4")


def test_sdxl_block_index():
    from networks.lora_blocks import block_index, num_blocks
    assert num_blocks(True) == 23 and num_blocks(False) == 25
    assert block_index("lora_unet_input_blocks_4_1_proj_in", True) == 5
    assert block_index("lora_unet_middle_block_1_proj_in", True) == 11
    assert block_index("lora_unet_output_blocks_8_0_in_layers_2", True) == 21
    assert block_index("lora_unet_down_blocks_1_attentions_0_proj_in", False) == 4
    assert block_index("lora_unet_up_blocks_3_attentions_2_proj_in", False) == 24
    assert block_index("lora_unet_mid_block_attentions_0_proj_in", False) == 12


def test_loraplus_groups_and_sdxl_te_lrs():
    unet, tes = tiny_sdxl()
    net = _network(unet, tes, loraplus_lr_ratio=16)
    groups, desc = net.prepare_optimizer_params([1e-5, 2e-5], 1e-4, 1e-3)
    lrs = dict(zip(desc, [g["lr"] for g in groups]))
    assert lrs == {
        "textencoder1": 1e-5, "textencoder1 plus": 1.6e-4, "textencoder2": 2e-5, "textencoder2 plus": 3.2e-4,
        "unet": 1e-4, "unet plus": 1.6e-3,
    }
    plus_ids = {id(p) for g, d in zip(groups, desc) if d.endswith("plus") for p in g["params"]}
    assert plus_ids == {id(m.lora_up.weight) for m in net.all_loras}


def test_zero_text_encoder_lr_freezes_te_loras():
    unet, tes = tiny_sd15()
    net = _network(unet, tes)
    groups, desc = net.prepare_optimizer_params(0, 1e-4, 1e-4)
    assert desc == ["unet"]
    assert not any(p.requires_grad for m in net.text_encoder_loras for p in m.parameters())


def test_max_norm_regularization():
    unet, tes = tiny_sd15()
    net = _network(unet, tes, dim=4, alpha=4)
    randomize(net, std=1.0)
    from networks.lora_math import delta_weight
    before = [delta_weight(m.lora_down.weight, m.lora_up.weight, m.scale).norm().item() for m in net.all_loras]
    scaled, mean_norm, max_norm = net.apply_max_norm_regularization(1.0)
    after = [delta_weight(m.lora_down.weight, m.lora_up.weight, m.scale).norm().item() for m in net.all_loras]
    assert scaled == sum(b > 1.0 for b in before) > 0
    assert max(after) <= 1.0 + 1e-4 and max_norm <= 1.0 + 1e-4
    assert mean_norm == pytest.approx(sum(after) / len(after), rel=1e-4)


def test_network_dim_zero_is_an_error():
    unet, tes = tiny_sd15()
    with pytest.raises(UserError, match="network_dim"):
        create_network(1.0, 0, 1, None, tes[0], unet)


def test_train_unet_only_drops_te_modules():
    unet, tes = tiny_sd15()
    net = create_network(1.0, 4, 1, None, tes[0], unet)
    net.apply_to(tes[0], unet, apply_text_encoder=False)
    assert not net.text_encoder_loras
    assert all(k.startswith("lora_unet_") for k in net.state_dict())
