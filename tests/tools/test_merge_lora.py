"""tools/merge_lora.py: LoRAs baked into a checkpoint act like hooked LoRAs; LoRA+LoRA merges are exact (concat) or SVD."""

import glob
import os

import pytest
import torch
from safetensors import safe_open

from networks.lora_format import is_kohya_key
from library.models import load_base_model
from library.inference.pipelines import make_pipeline
from networks.lora import create_network_from_weights
from networks.lora_file import read_lora_file
from networks.lora_math import delta_weight, effective_alpha
from tools import merge_lora

from tests.tiny_model_calls import te_outputs, unet_output

from .lora_utils import make_lora


def _deltas(path, ratio=1.0):
    """Module name -> ratio * delta of a LoRA file."""
    tensors = read_lora_file(str(path))[0]
    out = {}
    for key, down in tensors.items():
        if key.endswith(".lora_down.weight"):
            name = key[: -len(".lora_down.weight")]
            alpha = effective_alpha(tensors.get(f"{name}.alpha"), down.shape[0])
            out[name] = delta_weight(down, tensors[f"{name}.lora_up.weight"], ratio * alpha / down.shape[0])
    return out


def _summed(*pairs):
    total = {}
    for path, ratio in pairs:
        for name, d in _deltas(path, ratio).items():
            total[name] = total[name] + d if name in total else d
    return total


def _assert_same_deltas(got, want, atol):
    assert got.keys() == want.keys()
    for name in want:
        torch.testing.assert_close(got[name], want[name], rtol=0, atol=atol, msg=name)


@pytest.fixture(scope="module")
def sd1_loras(tiny_path, tmp_path_factory):
    """Two SD1 LoRAs: a LoCon of rank 4 and a plain LoRA of rank 2 (so conv modules exist in one file only)."""
    folder = tmp_path_factory.mktemp("loras")
    base = load_base_model(tiny_path("sd1"))
    a = make_lora(base, folder / "a.safetensors", seed=1)
    b = make_lora(base, folder / "b.safetensors", seed=2, dim=2, alpha=1.0, conv_dim=None)
    return base, a, b


def _config_folder(model, folder):
    """A diffusers folder with configs, tokenizers and scheduler but no weights: all weights must come from the single file."""
    make_pipeline(model, "ddim").save_pretrained(folder)
    for f in glob.glob(os.path.join(folder, "*", "*.safetensors")):
        os.remove(f)
    return str(folder)


@pytest.mark.parametrize("family", ["sd1", "sdxl"])
def test_merged_checkpoint_equals_hooked_loras_and_loads_in_diffusers(tiny_path, tmp_path, family, capsys):
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

    base = load_base_model(tiny_path(family))
    a = make_lora(base, tmp_path / "a.safetensors", seed=1)
    b = make_lora(base, tmp_path / "b.safetensors", seed=2, dim=2, conv_dim=None)
    out = tmp_path / "merged.safetensors"
    argv = ["--sd_model", str(tiny_path(family)), "--models", a, b, "--ratios", "0.7", "-0.4", "--save_to", str(out)]
    assert merge_lora.main(argv) == 0
    assert "wrote" in capsys.readouterr().out

    merged = load_base_model(out)
    assert merged.family == family
    for path, ratio in ((a, 0.7), (b, -0.4)):
        net, sd = create_network_from_weights(ratio, path, base.vae, base.text_encoders, base.unet)
        net.load_weights(sd)
        net.apply_to()
    ctx_h, added_h = te_outputs(base)
    ctx_m, added_m = te_outputs(merged)
    torch.testing.assert_close(ctx_m, ctx_h, rtol=0, atol=1e-4)
    if family == "sdxl":
        torch.testing.assert_close(added_m["text_embeds"], added_h["text_embeds"], rtol=0, atol=1e-4)
    pred_h, pred_m = unet_output(base, ctx_h, added_h), unet_output(merged, ctx_m, added_m)
    torch.testing.assert_close(pred_m, pred_h, rtol=0, atol=1e-4)
    plain = load_base_model(tiny_path(family))
    assert (unet_output(plain, *te_outputs(plain)) - pred_m).abs().max() > 1e-3  # the LoRAs did change something

    with safe_open(str(out), "pt") as f:
        meta = f.metadata()
    assert meta["modelspec.architecture"].startswith("stable-diffusion") and "/lora" not in meta["modelspec.architecture"]
    assert "a" in meta["modelspec.merged_from"] and "lorasmith.merge" in meta

    # diffusers reads the file fully offline, with only configs from a local folder
    cls = StableDiffusionXLPipeline if family == "sdxl" else StableDiffusionPipeline
    extra = {} if family == "sdxl" else {"safety_checker": None, "requires_safety_checker": False}
    pipe = cls.from_single_file(str(out), config=_config_folder(merged, tmp_path / "cfg"), local_files_only=True, **extra)
    for ours, theirs in ((merged.unet, pipe.unet), (merged.vae, pipe.vae), (merged.text_encoders[0], pipe.text_encoder)):
        mine, other = ours.state_dict(), theirs.state_dict()
        assert mine.keys() == other.keys()
        assert all(torch.equal(mine[k], other[k]) for k in mine)


def test_checkpoint_merge_precision_and_errors(sd1_loras, tiny_path, tmp_path, capsys):
    base, a, b = sd1_loras
    out = tmp_path / "half.safetensors"
    assert merge_lora.main(["--sd_model", str(tiny_path("sd1")), "--models", a, "--save_to", str(out), "--save_precision", "fp16"]) == 0
    with safe_open(str(out), "pt") as f:
        assert {f.get_slice(k).get_dtype() for k in f.keys()} == {"F16"}
    capsys.readouterr()
    bad = [
        (["--sd_model", str(tiny_path("sd1")), "--models", a, "--save_to", str(tmp_path / "x.safetensors"), "--new_rank", "4"], "--new_rank"),
        (["--sd_model", str(tiny_path("sdxl")), "--models", a, "--save_to", str(tmp_path / "x.safetensors")], "a.safetensors"),
        (["--sd_model", str(tiny_path("sd1")), "--models", a, b, "--ratios", "1", "--save_to", str(tmp_path / "x.safetensors")], "--ratios"),
        (["--sd_model", str(tiny_path("sd1")), "--models", a, "--save_to", str(tmp_path / "x.ckpt")], "safetensors"),
    ]
    for argv, needle in bad:
        assert merge_lora.main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and needle in err and err.count("\n") == 1, err
    assert not (tmp_path / "x.safetensors").exists()


def test_concat_merge_is_the_exact_sum(sd1_loras, tmp_path, capsys):
    base, a, b = sd1_loras
    out = tmp_path / "ab.safetensors"
    assert merge_lora.main(["--models", a, b, "--ratios", "0.5", "-1.5", "--save_to", str(out)]) == 0
    tensors, meta = read_lora_file(str(out))
    assert all(is_kohya_key(k) for k in tensors)
    _assert_same_deltas(_deltas(out), _summed((a, 0.5), (b, -1.5)), atol=1e-6)
    # ranks add up where both files have the module; conv modules come from a alone
    assert tensors["lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight"].shape[0] == 6
    assert meta["ss_network_module"] == "networks.lora" and meta["ss_base_model_version"] == "sd_v1"
    # resnet linears / 1x1 convs are in a only (rank 4), attention ones in both (rank 6)
    assert meta["ss_network_dim"] == "Dynamic" and meta["ss_network_alpha"] == "Dynamic"
    assert meta["ss_network_args"] == '{"conv_dim": "2", "conv_alpha": "2.0"}'  # kohya's format: alpha as float

    assert meta["modelspec.architecture"] == "stable-diffusion-v1/lora" and meta["ss_output_name"] == "ab"
    assert meta["sshs_model_hash"] and meta["modelspec.merged_from"] == "a, b"
    # the merged file loads into the model like any trained LoRA
    net, sd = create_network_from_weights(1.0, str(out), base.vae, base.text_encoders, base.unet)
    net.load_weights(sd)


def test_svd_merge_full_rank_reproduces_concat_and_lower_rank_is_optimal(sd1_loras, tmp_path):
    base, a, b = sd1_loras
    exact = _summed((a, 0.8), (b, 0.6))
    full = tmp_path / "full.safetensors"
    assert merge_lora.main(["--models", a, b, "--ratios", "0.8", "0.6", "--new_rank", "64", "--clamp_quantile", "1", "--save_to", str(full)]) == 0
    _assert_same_deltas(_deltas(full), exact, atol=1e-4)

    low = tmp_path / "low.safetensors"
    argv = ["--models", a, b, "--ratios", "0.8", "0.6", "--new_rank", "3", "--new_conv_rank", "1", "--clamp_quantile", "1"]
    assert merge_lora.main(argv + ["--save_to", str(low)]) == 0
    tensors, meta = read_lora_file(str(low))
    assert all(is_kohya_key(k) for k in tensors)
    approx = _deltas(low)
    for name, d in exact.items():
        down = tensors[f"{name}.lora_down.weight"]
        k = 1 if down.dim() == 4 and down.shape[2:] != (1, 1) else 3
        assert down.shape[0] == k and float(tensors[f"{name}.alpha"]) == k
        # Eckart-Young: the error of the best rank-k approximation is the norm of the dropped singular values
        tail = torch.linalg.svdvals(d.flatten(1).double())[k:].norm()
        assert abs((d - approx[name]).flatten(1).double().norm() - tail) < 1e-4, name
    assert meta["ss_network_dim"] == "3" and '"conv_dim": "1"' in meta["ss_network_args"]

    clamped = tmp_path / "clamped.safetensors"  # kohya's default 0.99 clamp
    assert merge_lora.main(argv[:-2] + ["--save_to", str(clamped)]) == 0
    assert all(is_kohya_key(k) for k in read_lora_file(str(clamped))[0])


def test_ratio_zero_and_single_file_scaling(sd1_loras, tmp_path):
    _, a, b = sd1_loras
    out = tmp_path / "only_a.safetensors"
    assert merge_lora.main(["--models", a, b, "--ratios", "2", "0", "--save_to", str(out), "--save_precision", "fp16"]) == 0
    tensors = read_lora_file(str(out))[0]
    assert {t.dtype for k, t in tensors.items() if not k.endswith("alpha")} == {torch.float16}
    _assert_same_deltas(_deltas(out), _deltas(a, 2.0), atol=2e-3)


def test_lora_merge_errors(sd1_loras, tiny_path, tmp_path, capsys):
    _, a, b = sd1_loras
    xl = make_lora(load_base_model(tiny_path("sdxl")), tmp_path / "xl.safetensors", seed=3, conv_dim=None)
    weird = tmp_path / "loha.safetensors"
    from safetensors.torch import save_file

    save_file({"lora_unet_x.hada_w1_a": torch.zeros(2, 2)}, str(weird))
    out = str(tmp_path / "o.safetensors")
    cases = [
        (["--models", a, xl, "--save_to", out], ["SDXL", "xl.safetensors", "a.safetensors"]),
        (["--models", a, b, "--ratios", "1", "--save_to", out], ["--ratios"]),
        (["--models", str(weird), "--save_to", out], ["loha.safetensors", "hada_w1_a"]),
        (["--models", a, str(tmp_path / "nope.safetensors"), "--save_to", out], ["nope.safetensors", "not found"]),
        (["--models", a, b, "--save_to", a], ["is one of the inputs"]),
        (["--models", a, b, "--ratios", "0", "0", "--save_to", out], ["ratio 0"]),
        (["--models", a, "--new_rank", "0", "--save_to", out], ["--new_rank"]),
    ]
    for argv, needles in cases:
        assert merge_lora.main(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith("error: ") and err.count("\n") == 1, err
        assert all(n in err for n in needles), err
    assert not os.path.exists(out)
