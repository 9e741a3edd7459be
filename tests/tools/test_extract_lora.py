"""tools/extract_lora.py: a LoRA merged into a base comes back out (full rank), the text encoder only when it differs."""

import pytest
import torch

from library.models import load_base_model, save_base_model
from networks.lora import create_network
from networks.lora_file import read_lora_file
from networks.lora_math import delta_weight, effective_alpha
from tools import extract_lora


def _merged(tiny_path, family, folder, seed=1, te=True):
    """(tuned checkpoint path, {module: delta}) for a random LoCon (rank 4, conv 2) merged into the tiny base."""
    model = load_base_model(tiny_path(family))
    net = create_network(1.0, 4, 2.0, None, model.text_encoders, model.unet, conv_dim=2, conv_alpha=1)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for lora in net.all_loras:
            std = 0.0 if lora.lora_name.startswith("lora_te") and not te else 0.2
            for w in (lora.lora_down.weight, lora.lora_up.weight):
                w.copy_(torch.randn(w.shape, generator=g) * std)
    deltas = {lora.lora_name: lora.get_weight(1.0).detach() for lora in net.all_loras}
    net.merge_to()
    path = folder / f"tuned_{family}.safetensors"
    save_base_model(model, path)
    return path, deltas


def _extracted_deltas(path):
    tensors = read_lora_file(str(path))[0]
    out = {}
    for key, down in tensors.items():
        if key.endswith(".lora_down.weight"):
            name = key[: -len(".lora_down.weight")]
            alpha = effective_alpha(tensors[f"{name}.alpha"], down.shape[0])
            out[name] = delta_weight(down, tensors[f"{name}.lora_up.weight"], alpha / down.shape[0])
    return out


@pytest.mark.parametrize("family", ["sd1", "sdxl"])
def test_full_rank_extraction_recovers_the_lora(tiny_path, tmp_path, family, capsys):
    tuned, deltas = _merged(tiny_path, family, tmp_path)
    out = tmp_path / "extracted.safetensors"
    rc = extract_lora.main(["--model_org", str(tiny_path(family)), "--model_tuned", str(tuned), "--save_to", str(out),
                            "--dim", "4", "--conv_dim", "2", "--clamp_quantile", "1"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "Frobenius norm of the difference retained" in printed
    got = _extracted_deltas(out)
    assert got.keys() == deltas.keys()  # same module names as networks.lora: TE (it differs) + UNet incl. convs
    assert any(d.dim() == 4 and d.shape[-1] == 3 for d in got.values())
    for name, want in deltas.items():
        err = float((got[name] - want).norm() / want.norm())
        assert err < 1e-3, (name, err)
    tensors, meta = read_lora_file(str(out))
    assert meta["ss_base_model_version"] == ("sdxl_base_v1-0" if family == "sdxl" else "sd_v1")
    assert meta["ss_network_dim"] == "4" and meta["ss_network_args"] == '{"conv_dim": "2", "conv_alpha": "2.0"}'
    assert {float(v) for k, v in tensors.items() if k.endswith(".alpha")} == {4.0, 2.0}  # alpha = rank


def test_lower_rank_and_unchanged_text_encoder(tiny_path, tmp_path, capsys):
    tuned, deltas = _merged(tiny_path, "sd1", tmp_path, seed=2, te=False)
    out = tmp_path / "r2.safetensors"
    rc = extract_lora.main(["--model_org", str(tiny_path("sd1")), "--model_tuned", str(tuned), "--save_to", str(out),
                            "--dim", "2", "--save_precision", "fp16"])
    assert rc == 0
    assert "text encoder is the same" in capsys.readouterr().out
    tensors = read_lora_file(str(out))[0]
    assert not any(k.startswith("lora_te") for k in tensors)
    assert all(v.dtype == torch.float16 for v in tensors.values())
    downs = [v for k, v in tensors.items() if k.endswith("lora_down.weight")]
    assert {d.shape[0] for d in downs} == {2} and all(d.dim() == 2 or d.shape[-1] == 1 for d in downs)  # no 3x3 without --conv_dim
    # the default 99% clamp changes little: rank-2 of a rank-4 delta keeps most of its norm
    got = _extracted_deltas(out)
    name = "lora_unet_mid_block_attentions_0_transformer_blocks_0_attn1_to_q"
    s = torch.linalg.svd(deltas[name].double())[1]
    best = float(s[2:].pow(2).sum().sqrt() / s.pow(2).sum().sqrt())
    assert float((got[name].double() - deltas[name]).norm() / deltas[name].norm()) < best + 0.05


def test_errors(tiny_path, tmp_path, capsys):
    sd1, sdxl = str(tiny_path("sd1")), str(tiny_path("sdxl"))
    out = str(tmp_path / "o.safetensors")
    cases = [
        (["--model_org", sd1, "--model_tuned", sdxl, "--save_to", out], "same family"),
        (["--model_org", sd1, "--model_tuned", str(tmp_path / "none.safetensors"), "--save_to", out], "none.safetensors"),
        (["--model_org", sd1, "--model_tuned", sd1, "--save_to", str(tmp_path / "o.pt")], "--save_to"),
        (["--model_org", sd1, "--model_tuned", sd1, "--save_to", out, "--clamp_quantile", "0"], "--clamp_quantile"),
        (["--model_org", sd1, "--model_tuned", sd1, "--save_to", out, "--sdxl", "--family", "sd1"], "disagree"),
        (["--model_org", sd1, "--model_tuned", sd1, "--save_to", out, "--sdxl"], sd1),
        (["--model_org", sd1, "--model_tuned", sd1, "--save_to", out], "nothing to extract"),
    ]
    for argv, needle in cases:
        assert extract_lora.main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and needle in err and err.count("\n") == 1 and "Traceback" not in err, err
    assert extract_lora.main(cases[0][0] + ["--debug"]) == 2
    assert "Traceback" in capsys.readouterr().err
