"""--network_module: our DyLoRA / LoRA-FA / OFT and any module following kohya's contract train on the tiny
models, and every file they write loads in ComfyUI's key grammar (tests/networks/comfy_lora.py) and, for
plain-LoRA files, in diffusers."""

import json
import logging
import os

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from library.errors import UserError
from library.models import load_base_model
from library.models.saving import original_state_dict
from library.options import namespace_from
from library.train.entry import train
from library.train.loop import Interrupted
from tests.networks import comfy_lora, kohya_contract_module
from tests.train.conftest import base_values
from tests.train.test_training import StopAfter

SCRIPTS = {"sd1": "train_network", "sdxl": "sdxl_train_network"}


def _train(tiny_ckpt, demo_data, out, family="sd1", **extra):
    values = base_values(tiny_ckpt(family), demo_data, out, max_train_steps=2, **extra)
    return train(namespace_from(values, SCRIPTS[family]), SCRIPTS[family])


def _metadata(path):
    with safe_open(path, "pt") as f:
        return f.metadata()


def _comfy(ckpt, lora):
    base = load_base_model(ckpt)
    kmap = comfy_lora.key_map(ckpt, dict(base.unet.config))
    patches, not_loaded = comfy_lora.load_lora(load_file(lora), kmap)
    return base, patches, not_loaded


OURS = [("sd1", "networks.dylora", ["unit=2"]), ("sd1", "networks.lora_fa", []),
        ("sd1", "networks.oft", ["enable_conv=True"]), ("sdxl", "networks.oft", [])]


@pytest.mark.parametrize("family,module,net_args", OURS)
def test_our_modules_train_and_patch_like_comfyui(family, module, net_args, tiny_ckpt, demo_data, tmp_path):
    result = _train(tiny_ckpt, demo_data, tmp_path / "out", family, network_module=module, network_args=net_args or None,
                    network_dim=4, network_alpha=1)
    md = _metadata(result.lora)
    assert md["ss_network_module"] == module
    if net_args:
        assert json.loads(md["ss_network_args"]) == dict(a.split("=") for a in net_args)
    base, patches, not_loaded = _comfy(tiny_ckpt(family), result.lora)
    assert not not_loaded, not_loaded[:3]
    kinds = {kind for kind, _ in patches.values()}
    assert kinds == ({"oft"} if module == "networks.oft" else {"lora"})
    # ComfyUI's patched weights equal the base with our network merged (OFT: below ComfyUI's absolute limit alpha)
    reader = module if module == "networks.oft" else "networks.lora"
    net_module = __import__(reader, fromlist=["x"])
    tes = base.text_encoders if len(base.text_encoders) > 1 else base.text_encoders[0]
    net, sd = net_module.create_network_from_weights(1.0, result.lora, base.vae, tes, base.unet)
    net.merge_to(tes, base.unet, sd)
    ours = original_state_dict(base)
    original = load_file(tiny_ckpt(family))
    unet_patches = {k: p for k, p in patches.items() if k.startswith("model.diffusion_model.")}
    assert unet_patches
    changed = 0
    for key, (kind, parts) in unet_patches.items():
        expected = comfy_lora.patched_weight(original[key], kind, parts)
        torch.testing.assert_close(ours[key].float(), expected, atol=2e-5, rtol=1e-4)
        changed += int(not torch.equal(expected, original[key].float()))
    assert changed > 0


@pytest.mark.parametrize("module", ["networks.dylora", "networks.lora_fa"])
def test_dylora_and_lora_fa_files_load_in_diffusers(module, tiny_ckpt, demo_data, tmp_path, caplog):
    pytest.importorskip("peft", reason="diffusers needs peft to load LoRA files")
    from library.inference.pipelines import make_pipeline
    from networks.lora import create_network_from_weights

    result = _train(tiny_ckpt, demo_data, tmp_path / "out", network_module=module, learning_rate=5e-2,
                    network_args=["conv_dim=4", "conv_alpha=2"])
    ours = load_base_model(tiny_ckpt("sd1"))
    net, sd = create_network_from_weights(1.0, result.lora, ours.vae, ours.text_encoders, ours.unet)
    net.apply_to(ours.text_encoders, ours.unet)
    net.load_weights(sd)
    pipe = make_pipeline(load_base_model(tiny_ckpt("sd1")), "ddim")
    with caplog.at_level(logging.WARNING):
        pipe.load_lora_weights(str(tmp_path / "out"), weight_name="t.safetensors")
    assert not [r.getMessage() for r in caplog.records if "lora" in r.getMessage().lower()]
    torch.manual_seed(0)
    x, ctx, t = torch.randn(1, 4, 8, 8), torch.randn(1, 77, ours.unet.config.cross_attention_dim), torch.tensor([500])
    with torch.no_grad():
        a, b = ours.unet(x, t, ctx).sample, pipe.unet(x, t, ctx).sample
    torch.testing.assert_close(b, a, atol=1e-4, rtol=1e-4)


LYCORIS = [("sd1", "locon", {"lora"}), ("sd1", "loha", {"loha"}), ("sd1", "lokr", {"lokr"}), ("sdxl", "loha", {"loha"})]


@pytest.mark.parametrize("family,algo,kinds", LYCORIS)
def test_lycoris_trains_through_the_contract_and_its_file_is_comfyui_native(family, algo, kinds, tiny_ckpt, demo_data, tmp_path):
    pytest.importorskip("lycoris", reason="LyCORIS (pip install lycoris-lora) is optional")
    result = _train(tiny_ckpt, demo_data, tmp_path / "out", family, network_module="lycoris.kohya",
                    network_args=[f"algo={algo}", "preset=attn-mlp"], network_dim=4, network_alpha=2)
    assert result.steps == 2 and all(map(torch.isfinite, map(torch.tensor, result.losses)))
    md = _metadata(result.lora)
    assert md["ss_network_module"] == "lycoris.kohya" and json.loads(md["ss_network_args"])["algo"] == algo
    _, patches, not_loaded = _comfy(tiny_ckpt(family), result.lora)
    assert not not_loaded, not_loaded[:3]
    assert {kind for kind, _ in patches.values()} == kinds
    te_prefixes = {"lora_te"} if family == "sd1" else {"lora_te1", "lora_te2"}
    assert {k.split("_text_model")[0] for k in load_file(result.lora) if "_text_model_" in k} == te_prefixes
    assert not [f for f in os.listdir(tmp_path / "out") if "tmp" in f]
    _assert_comfyui_weights_equal_lycoris(tiny_ckpt(family), result)


def _assert_comfyui_weights_equal_lycoris(ckpt, result):
    """What the trained LyCORIS modules compute equals the base layer with ComfyUI's patch from the file
    (linear UNet layers, module by module: the file means what was trained)."""
    base = load_base_model(ckpt)
    kmap = comfy_lora.key_map(ckpt, dict(base.unet.config))
    tensors, original = load_file(result.lora), load_file(ckpt)
    result.network.eval()  # no dropout
    compared = 0
    for module in result.network.loras:
        target = kmap.get(module.lora_name)
        if target is None or not target.startswith("model.diffusion_model.") or original[target].ndim != 2:
            continue
        patches, _ = comfy_lora.load_lora({k: v for k, v in tensors.items() if k.startswith(module.lora_name + ".")},
                                          {module.lora_name: target})
        kind, parts = patches[target]
        patched = comfy_lora.patched_weight(original[target], kind, parts)
        bias = original.get(target[: -len("weight")] + "bias")
        x = torch.randn(3, patched.shape[1], generator=torch.Generator().manual_seed(compared))
        with torch.no_grad():
            ours = module(x.to(next(module.parameters()).dtype)).float()
        torch.testing.assert_close(ours, torch.nn.functional.linear(x, patched, None if bias is None else bias.float()),
                                   atol=1e-5, rtol=1e-4)
        compared += int(not torch.equal(patched, original[target].float()))
    assert compared > 0


def test_lycoris_default_preset_on_diffusers_unet_is_a_clear_error(tiny_ckpt, demo_data, tmp_path):
    pytest.importorskip("lycoris", reason="LyCORIS (pip install lycoris-lora) is optional")
    with pytest.raises(UserError, match="preset=attn-mlp"):
        _train(tiny_ckpt, demo_data, tmp_path / "out", network_module="lycoris.kohya", network_args=["algo=loha"])


def test_a_module_that_only_follows_kohyas_contract_trains_saves_and_resumes(tiny_ckpt, demo_data, tmp_path):
    calls = kohya_contract_module.CALLS
    values = base_values(tiny_ckpt("sd1"), demo_data, tmp_path / "a", max_train_steps=4, gradient_accumulation_steps=2,
                         network_module="tests.networks.kohya_contract_module", network_args=["scale=0.5", "anything=goes"],
                         save_every_n_steps=2)
    calls.update(on_step_start=0, on_epoch_start=0, prepare_network=0)
    straight = train(namespace_from(values))
    assert calls["kwargs"]["scale"] == "0.5" and calls["kwargs"]["anything"] == "goes"
    assert calls["on_step_start"] == 8 and calls["prepare_network"] == 1 and calls["on_epoch_start"] >= 1
    expected = load_file(straight.lora)
    assert expected and all(k.startswith("adapters.lora_unet_") for k in expected)
    assert any(v.abs().sum() > 0 for k, v in expected.items() if k.endswith(".up"))
    assert _metadata(straight.lora)["ss_network_module"] == "tests.networks.kohya_contract_module"
    files = os.listdir(tmp_path / "a")
    assert {"t.safetensors", "t-step00000002.safetensors"} <= set(files) and not [f for f in files if "tmp" in f]

    resumed_values = {**values, "output_dir": str(tmp_path / "b")}
    with pytest.raises(Interrupted) as stop:
        train(namespace_from(resumed_values), stop_flag=StopAfter(2))
    got = load_file(train(namespace_from({**resumed_values, "resume": stop.value.state_dir})).lora)
    assert got.keys() == expected.keys() and all(torch.equal(got[k], expected[k]) for k in expected)


def test_scale_weight_norms_needs_the_modules_max_norm(tiny_ckpt, demo_data, tmp_path):
    with pytest.raises(UserError, match="apply_max_norm_regularization"):
        _train(tiny_ckpt, demo_data, tmp_path / "out", network_module="tests.networks.kohya_contract_module",
               scale_weight_norms=1.0)
    with pytest.raises(UserError, match="apply_max_norm_regularization"):
        _train(tiny_ckpt, demo_data, tmp_path / "out", network_module="networks.oft", scale_weight_norms=1.0)
