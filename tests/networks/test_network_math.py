"""OFT, DyLoRA and LoRA-FA: the maths and the modules on tiny SD1.5/SDXL-shaped models."""

import pytest
import torch

from library.errors import UserError
from networks import dylora, lora_fa, oft
from networks.oft_math import constraint_for, limited_skew, rotate_weight, rotation
from tests.networks.conftest import run_unet, tiny_sd15, tiny_sdxl, unet_inputs


def test_oft_rotation_is_orthogonal_identity_when_zero_and_norm_limited():
    torch.manual_seed(0)
    blocks = torch.randn(3, 4, 4) * 0.3
    r = rotation(blocks, 0)
    torch.testing.assert_close(r @ r.transpose(1, 2), torch.eye(4).expand(3, 4, 4), atol=1e-5, rtol=0)
    torch.testing.assert_close(rotation(torch.zeros(3, 4, 4), 1.0), torch.eye(4).expand(3, 4, 4))
    assert limited_skew(blocks, 0.1).norm() == pytest.approx(0.1, rel=1e-4)
    assert constraint_for(1e-3, 320) == pytest.approx(0.32)
    half = rotation(blocks, 0, 0.5)
    torch.testing.assert_close(half, 0.5 * (r - torch.eye(4)) + torch.eye(4))
    w = torch.randn(12, 5)
    rotated = rotate_weight(r, w)
    torch.testing.assert_close(rotated[4:8], r[1].t() @ w[4:8])


@pytest.mark.parametrize("make", [tiny_sd15, tiny_sdxl])
def test_oft_fresh_network_changes_nothing_and_merge_equals_forward(make):
    unet, tes = make()
    inputs = unet_inputs(unet)
    base = run_unet(unet, inputs)
    net = oft.create_network(1.0, 4, 1.0, None, tes if len(tes) > 1 else tes[0], unet, enable_conv="True")
    net.apply_to(tes, unet, True, True)
    torch.testing.assert_close(run_unet(unet, inputs), base)
    assert all(k.startswith("lora_unet_") and k.endswith((".oft_blocks", ".alpha")) for k in net.state_dict())
    assert any("conv" in n or "in_layers" in n for n in (o.lora_name for o in net.unet_ofts))
    with torch.no_grad():
        for p in net.parameters():
            p.normal_(0, 0.02)
    hooked = run_unet(unet, inputs)
    assert (hooked - base).abs().max() > 1e-4
    net.merge_to()
    torch.testing.assert_close(run_unet(unet, inputs), hooked, atol=2e-5, rtol=1e-4)


def test_oft_refuses_text_encoder_only_and_indivisible_blocks():
    unet, tes = tiny_sd15()
    net = oft.create_network(1.0, 4, 1e-3, None, tes[0], unet)
    with pytest.raises(UserError, match="only the UNet"):
        net.apply_to(tes[0], unet, True, False)
    with pytest.raises(UserError, match="does not divide"):
        oft.create_network(1.0, 5, 1e-3, None, tes[0], unet)


def test_oft_reads_kohya_oft_unet_names(tmp_path):
    unet, tes = tiny_sd15()
    net = oft.create_network(1.0, 4, 1e-3, None, tes[0], unet)
    with torch.no_grad():
        for p in net.parameters():
            p.normal_(0, 0.02)
    kohya = {k.replace("lora_unet_", "oft_unet_", 1): v.clone() for k, v in net.state_dict().items()}
    back, sd = oft.create_network_from_weights(1.0, None, None, tes[0], unet, weights_sd=kohya)
    back.load_weights(sd)
    loaded = back.state_dict()
    for k, v in net.state_dict().items():
        torch.testing.assert_close(loaded[k], v)


def test_dylora_trains_only_the_drawn_unit_and_saves_a_plain_lora():
    unet, tes = tiny_sd15()
    net = dylora.create_network(1.0, 8, 4, None, tes[0], unet, unit="2")
    net.apply_to(tes[0], unet, True, True)
    module = net.unet_loras[0]
    assert len(module.lora_down_units) == 4
    with torch.no_grad():
        for p in net.parameters():
            p.normal_(0, 0.05)
    net.train()
    torch.manual_seed(3)
    drawn = int(torch.randint(4, (1,)))  # the draw the first module makes after seeding alike
    torch.manual_seed(3)
    x, t, ctx, kw = unet_inputs(unet)
    unet(x, t, ctx, **kw).sample.sum().backward()
    grads = [p.grad is not None for p in module.lora_up_units]
    assert grads == [i == drawn for i in range(4)]
    sd = net.state_dict()
    name = module.lora_name
    assert {f"{name}.lora_down.weight", f"{name}.lora_up.weight", f"{name}.alpha"} <= set(sd)
    assert sd[f"{name}.lora_down.weight"].shape[0] == 8 and not any("units" in k for k in sd)
    other = dylora.create_network(1.0, 8, 4, None, tes[0], unet, unit="2")
    other.load_weights(sd)
    loaded = other.state_dict()
    for k, v in sd.items():
        torch.testing.assert_close(loaded[k], v)
    with pytest.raises(UserError, match="not a multiple"):
        dylora.create_network(1.0, 8, 4, None, tes[0], unet, unit="3")


def test_dylora_eval_uses_full_rank_like_a_plain_lora(tmp_path):
    unet, tes = tiny_sd15()
    inputs = unet_inputs(unet)
    net = dylora.create_network(1.0, 4, 2, None, tes[0], unet, unit="1")
    net.apply_to(tes[0], unet, True, True)
    with torch.no_grad():
        for p in net.parameters():
            p.normal_(0, 0.05)
    net.eval()
    hooked = run_unet(unet, inputs)
    net.save_weights(str(tmp_path / "d.safetensors"), None, {})
    net.restore()
    plain_unet, plain_tes = tiny_sd15()
    from networks.lora import create_network_from_weights

    plain, sd = create_network_from_weights(1.0, str(tmp_path / "d.safetensors"), None, plain_tes[0], plain_unet)
    plain.apply_to(plain_tes[0], plain_unet)
    plain.load_weights(sd)
    torch.testing.assert_close(run_unet(plain_unet, inputs), hooked, atol=1e-5, rtol=1e-4)


def test_lora_fa_down_is_frozen_but_saved():
    unet, tes = tiny_sd15()
    net = lora_fa.create_network(1.0, 4, 4, None, tes[0], unet)
    net.apply_to(tes[0], unet, True, True)
    groups, _ = net.prepare_optimizer_params(1e-3, 1e-2, 1e-2)
    params = [p for g in groups for p in g["params"]]
    module = net.unet_loras[0]
    assert any(p is module.lora_up.weight for p in params) and all(p is not module.lora_down.weight for p in params)
    assert "lora_down.weight" not in dict(module.named_parameters())
    before = {k: v.clone() for k, v in net.state_dict().items() if "lora_down" in k}
    opt = torch.optim.AdamW(params, lr=1e-2)
    x, t, ctx, kw = unet_inputs(unet)
    net.train()
    unet(x, t, ctx, **kw).sample.pow(2).mean().backward()
    opt.step()
    after = net.state_dict()
    assert all(torch.equal(after[k], v) for k, v in before.items())
    assert any(after[k].abs().sum() > 0 for k in after if "lora_up" in k)
    std = module.lora_down.weight.std().item()
    assert 0.5 < std / (2 / (module.lora_down.weight.shape[1] + 4)) ** 0.5 < 1.5


CONTRACT = ("apply_to", "prepare_optimizer_params", "prepare_grad_etc", "on_epoch_start", "get_trainable_params",
            "save_weights", "load_weights", "set_multiplier", "is_mergeable", "merge_to", "enable_gradient_checkpointing")


@pytest.mark.parametrize("name", ["networks.lora", "networks.dylora", "networks.lora_fa", "networks.oft"])
def test_our_modules_follow_kohyas_contract(name, tmp_path):
    import importlib

    module = importlib.import_module(name)
    unet, tes = tiny_sdxl()
    net = module.create_network(1.0, 4, 1e-3 if name.endswith("oft") else 4, None, tes, unet, neuron_dropout=None)
    assert all(callable(getattr(net, m, None)) for m in CONTRACT)
    assert name.endswith("oft") or callable(getattr(net, "apply_max_norm_regularization", None))
    net.apply_to(tes, unet, True, True)
    groups, descriptions = net.prepare_optimizer_params(None, 1e-3, 1e-3)
    assert groups and len(groups) == len(descriptions)
    path = str(tmp_path / "n.safetensors")
    net.save_weights(path, torch.float16, {"ss_network_module": name})
    again, sd = module.create_network_from_weights(1.0, path, None, tes, unet, for_inference=True)
    assert set(again.state_dict()) == set(sd)
    assert net.is_mergeable()
