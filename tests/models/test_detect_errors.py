"""Family detection, overrides, and every user error as one line naming the file and the fix."""

import os

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from library.models import ModelLoadError, load_base_model, tiny_configs
from library.models.configs import with_prediction_type

from .conftest import FAMILIES, forward_all


def _read(path):
    with safe_open(str(path), "pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, dict(f.metadata())


def _write(path, sd, meta=None):
    save_file(sd, str(path), metadata=meta)
    return path


def _load_error(path, **kwargs) -> str:
    with pytest.raises(ModelLoadError) as info:
        load_base_model(path, **kwargs)
    msg = str(info.value)
    assert "\n" not in msg and str(path) in msg, msg
    return msg


@pytest.fixture
def no_metadata_means_tiny(monkeypatch):
    """Make metadata-less files resolve to tiny configs, so real-world detection runs on tiny tensors."""
    monkeypatch.setattr(
        "library.models.single_file.full_size_configs",
        lambda family, v_prediction=False: tiny_configs(family, v_prediction=v_prediction),
    )
    monkeypatch.setattr("library.models.detect.CONTEXT_DIM", {"sd1": 32, "sd2": 32, "sdxl": 80})


@pytest.mark.parametrize("family", FAMILIES)
def test_detects_family_from_keys_alone(tiny_path, tmp_path, no_metadata_means_tiny, family):
    sd, _ = _read(tiny_path(family))
    bare = _write(tmp_path / "bare.safetensors", sd)  # no lorasmith metadata: keys and shapes only
    model = load_base_model(bare)
    assert model.family == family and model.prediction_type == "epsilon"
    assert load_base_model(bare, family=family).family == family
    forward_all(model)


@pytest.mark.parametrize("zipfile", [True, False], ids=["zip", "legacy"])
def test_pickle_ckpt_with_state_dict_nesting_loads(tiny_path, tmp_path, no_metadata_means_tiny, zipfile):
    sd, _ = _read(tiny_path("sd1"))
    ckpt = tmp_path / "model.ckpt"
    torch.save({"state_dict": sd, "global_step": 470000, "epoch": 3}, ckpt, _use_new_zipfile_serialization=zipfile)
    model = load_base_model(ckpt)
    reference = load_base_model(tiny_path("sd1"))
    assert model.family == "sd1"
    assert all(torch.equal(a, b) for a, b in zip(model.unet.state_dict().values(), reference.unet.state_dict().values()))


def test_pickle_that_runs_code_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    ckpt = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {"model.diffusion_model.x": torch.zeros(1)}, "callback": Payload()}, ckpt)
    msg = _load_error(ckpt)
    assert "refused" in msg and "system" in msg and "safetensors" in msg
    assert not marker.exists()


def test_width_cross_check_catches_mismatched_unet(tiny_path, tmp_path):
    sd, _ = _read(tiny_path("sd1"))
    msg = _load_error(_write(tmp_path / "bare.safetensors", sd))  # tiny UNet: context 32, not 768
    assert "cross-attention width is 32" in msg


@pytest.mark.parametrize("family", ["sd2", "sdxl"])
def test_v_parameterization(tiny_path, family):
    model = load_base_model(tiny_path(family), v_parameterization=True)
    assert model.prediction_type == "v_prediction" and model.v_parameterization
    assert model.noise_scheduler.config.prediction_type == "v_prediction"
    if family == "sd2":
        assert model.model_version == "sd_v2_v"
    marked = tiny_path(family, v=True)  # the file itself declares v-prediction
    assert load_base_model(marked).prediction_type == "v_prediction"
    assert load_base_model(marked, v_parameterization=False).prediction_type == "epsilon"


def test_modelspec_prediction_type_is_honoured(tiny_path, tmp_path, no_metadata_means_tiny):
    sd, _ = _read(tiny_path("sd2"))
    path = _write(tmp_path / "v.safetensors", sd, {"modelspec.prediction_type": "v"})
    assert load_base_model(path).prediction_type == "v_prediction"


def test_truncated_safetensors(tiny_path, tmp_path):
    data = tiny_path("sd1").read_bytes()
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(data[: len(data) // 2])
    msg = _load_error(cut)
    assert "damaged or incomplete" in msg and "re-download" in msg


def test_unknown_layout_names_expected_prefixes(tmp_path):
    path = _write(tmp_path / "odd.safetensors", {"backbone.layer1.weight": torch.zeros(2)})
    msg = _load_error(path)
    assert "unknown checkpoint layout" in msg and "model.diffusion_model." in msg and "backbone.* (1)" in msg


def test_lone_vae_and_lone_diffusers_unet(tmp_path):
    vae = _write(tmp_path / "vae.safetensors", {"encoder.down.0.block.0.conv1.weight": torch.zeros(1)})
    assert "standalone VAE" in _load_error(vae)
    unet = _write(tmp_path / "unet.safetensors", {"down_blocks.0.resnets.0.conv1.weight": torch.zeros(1),
                                                  "time_embedding.linear_1.weight": torch.zeros(1)})
    assert "diffusers folder" in _load_error(unet)


def test_lora_file_given_as_checkpoint(tmp_path):
    path = _write(tmp_path / "my_lora.safetensors", {
        "lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight": torch.zeros(4, 8),
        "lora_unet_down_blocks_0_attentions_0_proj_in.lora_up.weight": torch.zeros(8, 4),
        "lora_unet_down_blocks_0_attentions_0_proj_in.alpha": torch.tensor(1.0),
    })
    assert "LoRA" in _load_error(path)


def test_sdxl_refiner_is_rejected(tmp_path):
    path = _write(tmp_path / "refiner.safetensors", {
        "conditioner.embedders.0.model.transformer.resblocks.0.ln_1.weight": torch.zeros(2),
        "model.diffusion_model.input_blocks.0.0.weight": torch.zeros(2),
    })
    assert "refiner" in _load_error(path)


def test_wrong_family_forced(tiny_path):
    msg = _load_error(tiny_path("sd1"), family="sdxl")
    assert "'sdxl' was forced" in msg and "sd1" in msg
    with pytest.raises(ModelLoadError, match="not one of"):
        load_base_model(tiny_path("sd1"), family="sd3")


def test_shape_mismatch_names_key_and_both_shapes(tiny_path, tmp_path):
    sd, meta = _read(tiny_path("sd1"))
    key = "model.diffusion_model.input_blocks.1.1.proj_out.weight"
    sd[key] = torch.zeros(16, 12, 1, 1)
    msg = _load_error(_write(tmp_path / "bad.safetensors", sd, meta))
    assert f"'{key}'" in msg and "[16, 12, 1, 1]" in msg and "[16, 16, 1, 1]" in msg


def test_inpainting_unet_gets_a_hint(tiny_path, tmp_path):
    sd, meta = _read(tiny_path("sd1"))
    sd["model.diffusion_model.input_blocks.0.0.weight"] = torch.zeros(16, 9, 3, 3)
    assert "inpainting" in _load_error(_write(tmp_path / "inpaint.safetensors", sd, meta))


def test_missing_and_unexpected_keys_are_summarised(tiny_path, tmp_path):
    sd, meta = _read(tiny_path("sdxl"))
    gone = [k for k in sd if k.startswith("conditioner.embedders.1.model.transformer.resblocks.2.")]
    for k in gone:
        del sd[k]
    msg = _load_error(_write(tmp_path / "holes.safetensors", sd, meta))
    assert f"{len(gone)} tensors of the sdxl text encoder 2 are missing" in msg
    assert "conditioner.embedders.1.model.transformer.resblocks.2.attn.in_proj_bias" in msg
    assert len(msg) < 600

    sd, meta = _read(tiny_path("sd1"))
    sd["model.diffusion_model.input_blocks.1.1.extra_gate.weight"] = torch.zeros(1)
    sd["some_other_tool.weight"] = torch.zeros(1)  # outside every part: ignored with a warning
    msg = _load_error(_write(tmp_path / "extra.safetensors", sd, meta))
    assert "does not belong to the sd1 UNet" in msg and "extra_gate" in msg


def test_corrupt_metadata_configs(tiny_path, tmp_path):
    sd, meta = _read(tiny_path("sd1"))
    meta["lorasmith.configs"] = "{not json"
    assert "metadata" in _load_error(_write(tmp_path / "meta.safetensors", sd, meta))


def test_missing_path_plain_folder_and_junk(tmp_path):
    assert "no such file" in _load_error(tmp_path / "nothing.safetensors")
    assert "not a diffusers model" in _load_error(tmp_path)
    junk = tmp_path / "junk.ckpt"
    junk.write_bytes(b"<html>404 not found</html>")
    assert "damaged or not a PyTorch file" in _load_error(junk)


def test_prediction_type_helper_copies():
    cfg = tiny_configs("sd1")
    v = with_prediction_type(cfg, "v_prediction")
    assert v["scheduler"]["prediction_type"] == "v_prediction" and cfg["scheduler"]["prediction_type"] == "epsilon"
