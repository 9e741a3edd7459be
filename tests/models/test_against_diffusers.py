"""An independent check of our saver: diffusers' own (one-way) single-file converters read
the files we write back to exactly the weights we saved."""

import pytest
import torch
from diffusers.loaders.single_file_utils import (
    convert_ldm_clip_checkpoint,
    convert_ldm_unet_checkpoint,
    convert_ldm_vae_checkpoint,
    convert_open_clip_checkpoint,
)
from safetensors import safe_open

from library.models import load_base_model
from library.models.keys_clip import model_state_dict

from .conftest import FAMILIES


def _same(converted, reference):
    assert set(reference) <= set(converted)
    for k, v in reference.items():
        assert torch.equal(converted[k].reshape(v.shape), v), k


@pytest.mark.parametrize("family", FAMILIES)
def test_diffusers_converters_agree(tiny_path, family):
    with safe_open(str(tiny_path(family)), "pt") as f:
        sd = {k: f.get_tensor(k) for k in f.keys()}
    model = load_base_model(tiny_path(family))
    unet = convert_ldm_unet_checkpoint(dict(sd), dict(model.unet.config))
    assert unet.keys() == model.unet.state_dict().keys()
    _same(unet, model.unet.state_dict())
    vae = convert_ldm_vae_checkpoint(dict(sd), dict(model.vae.config))
    assert vae.keys() == model.vae.state_dict().keys()
    _same(vae, model.vae.state_dict())
    if family != "sd2":  # the CLIP-L of SD1 and SDXL
        _same(convert_ldm_clip_checkpoint(dict(sd)), model_state_dict(model.text_encoders[0]))
    if family != "sd1":  # OpenCLIP-H / bigG; diffusers drops SD2's unused last block only at full size
        prefix = "conditioner.embedders.1.model." if family == "sdxl" else "cond_stage_model.model."
        converted = convert_open_clip_checkpoint(model.text_encoders[-1], dict(sd), prefix=prefix)
        _same(converted, model_state_dict(model.text_encoders[-1]))
