"""tools/resize_lora.py: exact at the same rank, SVD-tail error below it, kohya's dynamic ranks, metadata, errors."""

import json

import pytest
import torch

from library.models import load_base_model
from networks import lora_svd
from networks.lora import create_network_from_weights
from networks.lora_file import read_lora_file, save_lora_file
from networks.lora_math import delta_weight, effective_alpha
from tools import resize_lora

from .lora_utils import make_lora


def _deltas(tensors):
    out = {}
    for key, down in tensors.items():
        if key.endswith(".lora_down.weight"):
            name = key[: -len(".lora_down.weight")]
            alpha = effective_alpha(tensors.get(f"{name}.alpha"), down.shape[0])
            out[name] = delta_weight(down, tensors[f"{name}.lora_up.weight"], alpha / down.shape[0])
    return out


@pytest.fixture(scope="module")
def sd1_model(tiny_path):
    return load_base_model(tiny_path("sd1"))


@pytest.fixture(scope="module")
def locon(sd1_model, tmp_path_factory):
    """A rank-8 LoCon (3x3 convs rank 4) with random non-zero factors, alpha 2 / conv alpha 1."""
    path = tmp_path_factory.mktemp("resize") / "locon.safetensors"
    return make_lora(sd1_model, path, seed=3, dim=8, alpha=2.0, conv_dim=4)


def test_same_rank_reproduces_deltas(locon, tmp_path):
    out = tmp_path / "same.safetensors"
    assert resize_lora.main(["--model", locon, "--save_to", str(out), "--new_rank", "8", "--new_conv_rank", "4"]) == 0
    before, after = _deltas(read_lora_file(locon)[0]), _deltas(read_lora_file(str(out))[0])
    assert before.keys() == after.keys()
    for name in before:
        torch.testing.assert_close(after[name], before[name], rtol=0, atol=1e-4, msg=name)


def test_lower_rank_error_is_the_svd_tail(locon, tmp_path, capsys):
    out = tmp_path / "r3.safetensors"
    assert resize_lora.main(["--model", locon, "--save_to", str(out), "--new_rank", "3", "--new_conv_rank", "2", "--verbose"]) == 0
    printed = capsys.readouterr().out
    assert "fro retained" in printed and "resized" in printed and "Frobenius norm retained" in printed
    src, dst = read_lora_file(locon)[0], read_lora_file(str(out))[0]
    before, after = _deltas(src), _deltas(dst)
    for name, d in before.items():
        k = 2 if d.dim() == 4 and d.shape[2:] != (1, 1) else 3
        assert dst[f"{name}.lora_down.weight"].shape[0] == k
        s = torch.linalg.svd(d.flatten(1).double())[1]  # singular values of the full delta
        tail = s[k:].pow(2).sum().sqrt()
        err = (after[name] - d).double().norm()
        assert abs(float(err - tail)) <= 1e-5 + 1e-4 * float(s[0]), name
        # the alpha keeps the scale: new alpha / new rank == old alpha / old rank
        old_scale = float(src[f"{name}.alpha"]) / src[f"{name}.lora_down.weight"].shape[0]
        assert float(dst[f"{name}.alpha"]) / k == pytest.approx(old_scale)


def test_resized_file_loads_on_the_model(locon, sd1_model, tmp_path):
    out = tmp_path / "r2.safetensors"
    assert resize_lora.main(["--model", locon, "--save_to", str(out), "--new_rank", "2"]) == 0
    net, sd = create_network_from_weights(1.0, str(out), None, sd1_model.text_encoders, sd1_model.unet)
    assert net.load_weights(sd)["missing"] == []
    assert {lora.lora_dim for lora in net.all_loras} == {2}


def _known_lora(s_values, out_dim=12, in_dim=10, alpha=None, seed=0):
    """A kohya module whose delta (scale included) has exactly the singular values ``s_values``."""
    g = torch.Generator().manual_seed(seed)
    r = len(s_values)
    qu = torch.linalg.qr(torch.randn(out_dim, r, generator=g, dtype=torch.float64))[0]
    qd = torch.linalg.qr(torch.randn(in_dim, r, generator=g, dtype=torch.float64))[0]
    alpha = float(r) if alpha is None else alpha
    up = qu * torch.tensor(s_values, dtype=torch.float64) * (r / alpha)  # scale alpha/r cancels
    return {"lora_unet_m.lora_down.weight": qd.T.float(), "lora_unet_m.lora_up.weight": up.float(),
            "lora_unet_m.alpha": torch.tensor(alpha)}


S = [8.0, 4.0, 2.0, 1.0, 0.5, 0.25]


@pytest.mark.parametrize(
    "method,param,cap,expected",
    [
        ("sv_ratio", 5.0, 8, 3),  # keep S > 8/5 = 1.6
        ("sv_ratio", 100.0, 8, 6),
        ("sv_cumulative", 0.9, 8, 4),  # cumsum / 15.75: .51 .76 .89 .95
        ("sv_fro", 0.99, 8, 3),  # cumsum(S^2) / 85.31: .750 .938 .985 >= .99^2
        ("sv_fro", 0.99, 2, 2),  # capped by --new_rank
        (None, None, 5, 5),
    ],
)
def test_rank_selection_on_known_singular_values(method, param, cap, expected):
    tensors = _known_lora(S, alpha=3.0)
    u, s, vh = lora_svd.product_svd(tensors["lora_unet_m.lora_up.weight"] * 0.5, tensors["lora_unet_m.lora_down.weight"])
    torch.testing.assert_close(s, torch.tensor(S, dtype=torch.float64), rtol=1e-5, atol=1e-6)
    assert lora_svd.select_rank(s, cap, method, param) == expected
    out, rows = resize_lora.resize_lora_tensors(tensors, cap, dynamic_method=method, dynamic_param=param)
    assert rows[0].new_rank == expected and out["lora_unet_m.lora_down.weight"].shape[0] == expected
    assert rows[0].fro_retained == pytest.approx((sum(x * x for x in S[:expected]) / sum(x * x for x in S)) ** 0.5)
    assert float(out["lora_unet_m.alpha"]) == pytest.approx(3.0 / 6 * expected)


def test_zero_module_gets_rank_one():
    tensors = _known_lora(S)
    tensors["lora_unet_m.lora_up.weight"].zero_()
    out, rows = resize_lora.resize_lora_tensors(tensors, 4, dynamic_method="sv_fro", dynamic_param=0.9)
    assert rows[0].new_rank == 1 and not out["lora_unet_m.lora_up.weight"].any()


def test_dynamic_cli_writes_dynamic_metadata(tmp_path):
    src = tmp_path / "known.safetensors"
    meta = {"ss_network_dim": "6", "ss_network_alpha": "6.0", "ss_training_comment": "mine",
            "ss_network_args": json.dumps({"conv_dim": "4"}), "ss_output_name": "known"}
    save_lora_file(_known_lora(S), str(src), meta, torch.float16)
    out = tmp_path / "dyn.safetensors"
    rc = resize_lora.main(["--model", str(src), "--save_to", str(out), "--new_rank", "8",
                           "--dynamic_method", "sv_ratio", "--dynamic_param", "5"])
    assert rc == 0
    tensors, meta = read_lora_file(str(out))
    assert tensors["lora_unet_m.lora_down.weight"].shape[0] == 3
    assert tensors["lora_unet_m.lora_down.weight"].dtype == torch.float16  # the input's dtype by default
    assert meta["ss_network_dim"] == "Dynamic" and meta["ss_network_alpha"] == "Dynamic"
    assert meta["ss_training_comment"] == "Dynamic resize with sv_ratio: 5.0 from 6; mine"
    assert meta["ss_output_name"] == "known" and meta["sshs_model_hash"]


def test_fixed_rank_metadata_and_precision(locon, tmp_path):
    out = tmp_path / "m.safetensors"
    assert resize_lora.main(["--model", locon, "--save_to", str(out), "--new_rank", "4", "--new_conv_rank", "2",
                             "--save_precision", "bf16"]) == 0
    tensors, meta = read_lora_file(str(out))
    assert all(t.dtype == torch.bfloat16 for t in tensors.values())
    assert meta["ss_network_dim"] == "4" and meta["ss_network_alpha"] == "1.0"  # alpha 2 at rank 8 -> 1 at rank 4
    assert meta["ss_training_comment"].startswith("dimension is resized from 8 to 4 (conv: 2); ")


def test_errors_are_one_line(tmp_path, capsys, locon):
    peft = tmp_path / "peft.safetensors"
    save_lora_file({"unet.a.lora_A.weight": torch.zeros(2, 4), "unet.a.lora_B.weight": torch.zeros(4, 2)}, str(peft))
    cases = [
        (["--model", str(peft), "--save_to", str(tmp_path / "o.safetensors")], "convert_lora.py"),
        (["--model", str(tmp_path / "missing.safetensors"), "--save_to", str(tmp_path / "o.safetensors")], "not found"),
        (["--model", locon, "--save_to", str(tmp_path / "o.ckpt")], "--save_to"),
        (["--model", locon, "--save_to", str(tmp_path / "o.safetensors"), "--dynamic_method", "sv_fro"], "--dynamic_param"),
        (["--model", locon, "--save_to", str(tmp_path / "o.safetensors"), "--dynamic_method", "sv_fro", "--dynamic_param", "2"], "(0, 1]"),
        (["--model", locon, "--save_to", str(tmp_path / "o.safetensors"), "--new_rank", "0"], "--new_rank"),
    ]
    for argv, needle in cases:
        assert resize_lora.main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and needle in err and err.count("\n") == 1 and "Traceback" not in err, err
    assert not (tmp_path / "o.safetensors").exists()
    assert resize_lora.main(cases[0][0] + ["--debug"]) == 2
    assert "Traceback" in capsys.readouterr().err
