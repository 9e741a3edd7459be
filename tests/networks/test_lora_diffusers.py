"""Our LoRA files load unchanged in diffusers' ``load_lora_weights`` and give our outputs."""

import copy
import logging

import pytest
import torch
from diffusers import AutoencoderKL, DDPMScheduler, StableDiffusionPipeline, StableDiffusionXLPipeline
from transformers import CLIPTokenizer

from networks.lora import create_network
from tests.networks.conftest import randomize, run_unet, tiny_sd15, tiny_sdxl, unet_inputs

pytest.importorskip("peft", reason="diffusers needs peft to load LoRA files")


def _tokenizer():
    vocab = {"!": 0, "a</w>": 1, "<|startoftext|>": 49406, "<|endoftext|>": 49407}
    return CLIPTokenizer(vocab=vocab, merges=[], unk_token="<|endoftext|>")


def _vae():
    return AutoencoderKL(block_out_channels=(8, 16), down_block_types=("DownEncoderBlock2D",) * 2,
                         up_block_types=("UpDecoderBlock2D",) * 2, latent_channels=4, norm_num_groups=8)


def _te_out(te):
    ids = torch.tensor([[49406, 320, 1125, 539, 320, 2368, 49407] + [49407] * 3])
    with torch.no_grad():
        return te(ids).last_hidden_state


@pytest.mark.parametrize("family", ["sd15", "sdxl"])
@pytest.mark.parametrize("conv", [False, True], ids=["lora", "locon"])
def test_diffusers_loads_our_file_with_same_outputs(tmp_path, family, conv, caplog):
    unet, tes = (tiny_sd15 if family == "sd15" else tiny_sdxl)()
    pipe_unet, pipe_tes = copy.deepcopy(unet), copy.deepcopy(tes)
    kw = {"conv_dim": 4, "conv_alpha": 2} if conv else {}
    te_arg = tes if len(tes) > 1 else tes[0]
    net = create_network(1.0, 4, 2, None, te_arg, unet, **kw)
    net.apply_to(te_arg, unet)
    randomize(net, std=0.1)
    path = tmp_path / "ours.safetensors"
    net.save_weights(str(path), None, {"ss_network_module": "networks.lora"})

    common = dict(vae=_vae(), unet=pipe_unet, scheduler=DDPMScheduler(steps_offset=1, clip_sample=False))
    if family == "sd15":
        pipe = StableDiffusionPipeline(text_encoder=pipe_tes[0], tokenizer=_tokenizer(), safety_checker=None,
                                       feature_extractor=None, requires_safety_checker=False, **common)
    else:
        pipe = StableDiffusionXLPipeline(text_encoder=pipe_tes[0], text_encoder_2=pipe_tes[1], tokenizer=_tokenizer(),
                                         tokenizer_2=_tokenizer(), **common)
    with caplog.at_level(logging.WARNING):
        pipe.load_lora_weights(str(tmp_path), weight_name="ours.safetensors")
    problems = [r.getMessage() for r in caplog.records if "unexpected" in r.getMessage().lower() or "not" in r.getMessage().lower() and "lora" in r.getMessage().lower()]
    assert not problems, problems

    inputs = unet_inputs(unet)
    ours = run_unet(unet, inputs)
    theirs = run_unet(pipe.unet, inputs)
    assert not torch.allclose(ours, run_unet(copy.deepcopy(tiny_sd15()[0] if family == "sd15" else tiny_sdxl()[0]), inputs), atol=1e-3)
    assert torch.allclose(ours, theirs, atol=1e-4), (ours - theirs).abs().max()
    pipe_te_list = [pipe.text_encoder] + ([pipe.text_encoder_2] if family == "sdxl" else [])
    for ours_te, their_te in zip(tes, pipe_te_list):
        a, b = _te_out(ours_te), _te_out(their_te)
        assert torch.allclose(a, b, atol=1e-4), (a - b).abs().max()
