"""A diffusers folder (written with save_pretrained) loads offline and matches the single file."""

import json

import pytest
import torch

from library.models import ModelLoadError, load_base_model

from .conftest import FAMILIES, forward_all


def _save_folder(model, root, with_tokenizers, variant=None):
    model.unet.save_pretrained(root / "unet", variant=variant)
    model.vae.save_pretrained(root / "vae", variant=variant)
    for i, te in enumerate(model.text_encoders):
        te.save_pretrained(root / ("text_encoder" if i == 0 else "text_encoder_2"), variant=variant)
        if with_tokenizers:
            model.tokenizers[i].save_pretrained(root / ("tokenizer" if i == 0 else "tokenizer_2"))
    return root


@pytest.mark.parametrize("family", FAMILIES)
def test_folder_matches_single_file(tiny_path, tmp_path, family):
    single = load_base_model(tiny_path(family))
    folder = load_base_model(_save_folder(single, tmp_path, with_tokenizers=family != "sd1"))
    assert folder.family == family and folder.prediction_type == "epsilon"
    assert folder.source == str(tmp_path) and len(folder.content_hash) == 64
    for a, b in zip([single.unet, single.vae, *single.text_encoders], [folder.unet, folder.vae, *folder.text_encoders]):
        sa, sb = a.state_dict(), b.state_dict()
        assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    # Same weights; outputs may differ in the last bit because from_pretrained's tensors
    # sit at other memory alignments, which changes the CPU kernels' summation order.
    for a, b in zip(forward_all(single), forward_all(folder)):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    assert [t.pad_token for t in folder.tokenizers] == [t.pad_token for t in single.tokenizers]
    assert folder.tokenizers[0]("a photo of a cat").input_ids == [49406, 320, 1125, 539, 320, 2368, 49407]
    assert folder.configs["text_encoders"] == single.configs["text_encoders"]


def test_folder_prediction_type_family_variant_and_missing_parts(tiny_path, tmp_path):
    root = _save_folder(load_base_model(tiny_path("sd2")), tmp_path, with_tokenizers=False, variant="fp16")
    assert all(".fp16." in f.name for f in (root / "unet").glob("*.safetensors"))
    (root / "scheduler").mkdir()
    (root / "scheduler" / "scheduler_config.json").write_text(json.dumps({"prediction_type": "v_prediction"}))
    assert load_base_model(root).prediction_type == "v_prediction"
    assert load_base_model(root, v_parameterization=False).prediction_type == "epsilon"
    with pytest.raises(ModelLoadError, match="'sd1' was forced"):
        load_base_model(root, family="sd1")
    for f in (root / "vae").iterdir():
        f.unlink()
    with pytest.raises(ModelLoadError, match="vae") as info:
        load_base_model(root)
    assert "\n" not in str(info.value) and str(root) in str(info.value)
