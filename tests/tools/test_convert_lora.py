"""tools/convert_lora.py: kohya <-> diffusers/PEFT round trips, files diffusers and our loader accept, unmapped keys reported."""

import json
import logging

import pytest
import torch

from library.models import load_base_model
from library.inference.pipelines import make_pipeline
from networks import lora_names
from networks.lora import create_network_from_weights
from networks.lora_file import read_lora_file, save_lora_file
from tools import convert_lora

from tests.tiny_model_calls import te_outputs, unet_output

from .lora_utils import make_lora

pytest.importorskip("peft", reason="diffusers needs peft for LoRA loading")


def _run(*argv):
    return convert_lora.main([str(a) for a in argv])


@pytest.fixture(scope="module")
def models(tiny_path):
    return {f: load_base_model(tiny_path(f)) for f in ("sd1", "sdxl")}


def _outputs(model):
    ctx, added = te_outputs(model)
    return ctx, unet_output(model, ctx, added)


def _assert_outputs_equal(got, want, atol=1e-4):
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=0, atol=atol)


def _assert_same_files(a, b):
    ta, tb = read_lora_file(str(a))[0], read_lora_file(str(b))[0]
    assert ta.keys() == tb.keys()
    for k in ta:
        assert ta[k].dtype == tb[k].dtype and torch.equal(ta[k], tb[k]), k


# --- kohya -> diffusers -> kohya -----------------------------------------------------------
@pytest.mark.parametrize("family", ["sd1", "sdxl"])
@pytest.mark.parametrize("conv_dim", [None, 2], ids=["lora", "locon"])
def test_round_trip_is_exact(models, tmp_path, family, conv_dim):
    src = make_lora(models[family], tmp_path / "k.safetensors", seed=1, dim=4, alpha=2.0, conv_dim=conv_dim)
    assert _run("--input", src, "--to", "diffusers", "--save_to", tmp_path / "d") == 0
    diff, meta = read_lora_file(str(tmp_path / "d" / "pytorch_lora_weights.safetensors"))
    assert all(k.split(".")[0] in lora_names.COMPONENTS and (".lora_A." in k or ".lora_B." in k) for k in diff)
    adapter = json.loads(meta["lora_adapter_metadata"])
    assert adapter["unet.r"] == 4 and adapter["unet.lora_alpha"] == 2.0
    if conv_dim:  # 3x3 convs have rank 2 and alpha 1: kept as patterns
        assert set(adapter["unet.rank_pattern"].values()) == {2} and set(adapter["unet.alpha_pattern"].values()) == {1.0}
    assert (family == "sdxl") == ("text_encoder_2.r" in adapter)
    assert _run("--input", tmp_path / "d", "--save_to", tmp_path / "back.safetensors") == 0
    _assert_same_files(src, tmp_path / "back.safetensors")
    back_meta = read_lora_file(str(tmp_path / "back.safetensors"))[1]
    assert back_meta["ss_base_model_version"] == models[family].model_version
    assert "converted from diffusers" in back_meta["ss_training_comment"]


def test_round_trip_fp16_through_peft_folder(models, tmp_path):
    """A PEFT folder (adapter_model.safetensors + adapter_config.json, base_model.model. keys) -> kohya."""
    src = make_lora(models["sd1"], tmp_path / "k.safetensors", seed=2, dim=4, alpha=3.0, conv_dim=None)
    tensors, _ = read_lora_file(src)
    half = tmp_path / "k16.safetensors"
    save_lora_file({k: v.half() for k, v in tensors.items() if "lora_te" not in k}, str(half))
    assert _run("--input", half, "--to", "diffusers", "--save_to", tmp_path / "d.safetensors") == 0
    diff = read_lora_file(str(tmp_path / "d.safetensors"))[0]
    folder = tmp_path / "peft"
    folder.mkdir()
    save_lora_file({"base_model.model." + k[len("unet."):]: v for k, v in diff.items()}, str(folder / "adapter_model.safetensors"))
    (folder / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 4, "lora_alpha": 3.0}))
    assert _run("--input", folder, "--save_to", tmp_path / "back.safetensors", "--family", "sd1") == 0
    _assert_same_files(half, tmp_path / "back.safetensors")


# --- diffusers' own files -> kohya, loaded by diffusers and by us ---------------------------
def _peft_adapters(model, style, seed=0):
    """Add PEFT adapters the way diffusers' training scripts do, give them random weights, save like they do."""
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    alpha = 8 if style == "peft" else 4  # SimpleLoRA / train_text_to_image_lora: lora_alpha = r
    unet_cfg = LoraConfig(r=4, lora_alpha=alpha, init_lora_weights="gaussian", target_modules=["to_k", "to_q", "to_v", "to_out.0"])
    te_cfg = LoraConfig(r=2, lora_alpha=alpha / 2, target_modules=["q_proj", "k_proj", "v_proj", "out_proj"])
    model.unet.add_adapter(unet_cfg)
    for te in model.text_encoders:
        te.add_adapter(te_cfg)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for net in [model.unet, *model.text_encoders]:
            for name, p in net.named_parameters():
                if "lora_" in name:
                    p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    layers = [get_peft_model_state_dict(net) for net in [model.unet, *model.text_encoders]]
    if style == "simplelora":  # diffusers' old key style: ...to_q.lora.down.weight, no alpha metadata
        from diffusers.utils import convert_state_dict_to_diffusers

        layers = [convert_state_dict_to_diffusers(sd) for sd in layers]
        metas = [None] * len(layers)
    else:
        metas = [unet_cfg.to_dict()] + [te_cfg.to_dict()] * len(model.text_encoders)
    return layers, metas


@pytest.mark.parametrize("family", ["sd1", "sdxl"])
@pytest.mark.parametrize("style", ["peft", "simplelora"])
def test_diffusers_file_to_kohya_loads_in_diffusers_and_ours(tiny_path, tmp_path, family, style, caplog):
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

    trained = load_base_model(tiny_path(family))
    base = _outputs(trained)
    layers, metas = _peft_adapters(trained, style)
    want = _outputs(trained)
    assert all((w - b).abs().max() > 1e-3 for w, b in zip(want, base))  # the adapters do change both outputs
    pipe_cls = StableDiffusionXLPipeline if family == "sdxl" else StableDiffusionPipeline
    kwargs = {"unet_lora_layers": layers[0], "text_encoder_lora_layers": layers[1]}
    if family == "sdxl":
        kwargs["text_encoder_2_lora_layers"] = layers[2]
    if style == "peft":
        kwargs.update(unet_lora_adapter_metadata=metas[0], text_encoder_lora_adapter_metadata=metas[1])
        if family == "sdxl":
            kwargs["text_encoder_2_lora_adapter_metadata"] = metas[2]
    pipe_cls.save_lora_weights(str(tmp_path / "diffusers_out"), safe_serialization=True, **kwargs)

    kohya = tmp_path / "kohya.safetensors"
    assert _run("--input", tmp_path / "diffusers_out", "--save_to", kohya) == 0
    tensors = read_lora_file(str(kohya))[0]
    alphas = {float(v) for k, v in tensors.items() if k.endswith(".alpha")}
    assert alphas == ({8.0, 4.0} if style == "peft" else {4.0, 2.0})  # unet r4 / te r2, alpha from the metadata or = r

    ours = load_base_model(tiny_path(family))
    net, sd = create_network_from_weights(1.0, str(kohya), None, ours.text_encoders, ours.unet)
    net.apply_to(ours.text_encoders, ours.unet)
    assert net.load_weights(sd)["missing"] == []
    _assert_outputs_equal(_outputs(ours), want)

    if style == "simplelora" and family == "sd1":
        # SimpleLoRA's node then renames the UNet keys into models/loras/<name>.safetensors: that file is
        # our kohya layout without alpha tensors (alpha = rank), so it needs no conversion
        renamed = {}
        for k, v in read_lora_file(str(tmp_path / "diffusers_out" / "pytorch_lora_weights.safetensors"))[0].items():
            if k.startswith("unet."):
                parts = ("lora_" + k.replace(".", "_").replace("A", "down").replace("B", "up")).split("_")
                renamed["_".join(parts[:-3]) + "." + parts[-3] + "_" + parts[-2] + "." + parts[-1]] = v
        assert renamed and all(torch.equal(tensors[k], v) for k, v in renamed.items())
        save_lora_file(renamed, str(tmp_path / "simple.safetensors"))
        assert _run("--input", tmp_path / "simple.safetensors", "--to", "diffusers", "--save_to", tmp_path / "s") == 0

    theirs = load_base_model(tiny_path(family))
    with caplog.at_level(logging.WARNING):
        make_pipeline(theirs, "ddim").load_lora_weights(str(tmp_path), weight_name="kohya.safetensors")
    assert not [r for r in caplog.records if "lora" in r.getMessage().lower()], [r.getMessage() for r in caplog.records]
    _assert_outputs_equal(_outputs(theirs), want)


@pytest.mark.parametrize("family", ["sd1", "sdxl"])
def test_kohya_to_diffusers_loads_in_diffusers(tiny_path, models, tmp_path, family, caplog):
    """Per-module ranks and alphas (LoCon) reach diffusers through lora_adapter_metadata."""
    src = make_lora(models[family], tmp_path / "k.safetensors", seed=4, dim=4, alpha=2.0, conv_dim=2)
    assert _run("--input", src, "--to", "diffusers", "--save_to", tmp_path / "d") == 0
    ours = load_base_model(tiny_path(family))
    net, sd = create_network_from_weights(1.0, src, None, ours.text_encoders, ours.unet)
    net.apply_to(ours.text_encoders, ours.unet)
    net.load_weights(sd)
    theirs = load_base_model(tiny_path(family))
    base = _outputs(theirs)
    with caplog.at_level(logging.WARNING):
        make_pipeline(theirs, "ddim").load_lora_weights(str(tmp_path / "d"))
    assert not [r for r in caplog.records if "lora" in r.getMessage().lower()], [r.getMessage() for r in caplog.records]
    want = _outputs(ours)
    assert all((w - b).abs().max() > 1e-3 for w, b in zip(want, base))
    _assert_outputs_equal(_outputs(theirs), want)


def test_attn_procs_bin(models, tmp_path):
    """diffusers' save_attn_procs layout in a pickled .bin (read weights-only) -> kohya with the same tensors."""
    src = make_lora(models["sd1"], tmp_path / "k.safetensors", seed=5, dim=4, alpha=4.0, conv_dim=None)
    kohya = read_lora_file(src)[0]
    procs, expected = {}, {}
    for proj in ("to_q", "to_k", "to_v", "to_out"):
        path = "down_blocks.1.attentions.0.transformer_blocks.0.attn2"
        name = "lora_unet_" + (path + "." + proj + ("_0" if proj == "to_out" else "")).replace(".", "_")
        for direction in ("down", "up"):
            t = kohya[f"{name}.lora_{direction}.weight"]
            procs[f"{path}.processor.{proj}_lora.{direction}.weight"] = t
            expected[f"{name}.lora_{direction}.weight"] = t
        expected[f"{name}.alpha"] = torch.tensor(4.0)
    torch.save(procs, tmp_path / "pytorch_lora_weights.bin")
    out = tmp_path / "from_bin.safetensors"
    assert _run("--input", tmp_path / "pytorch_lora_weights.bin", "--save_to", out, "--family", "sd1") == 0
    got = read_lora_file(str(out))[0]
    assert got.keys() == expected.keys() and all(torch.equal(got[k], expected[k]) for k in got)
    # to diffusers the family does not matter: no --family needed
    assert _run("--input", tmp_path / "pytorch_lora_weights.bin", "--to", "diffusers", "--save_to", tmp_path / "d.safetensors") == 0
    diff = read_lora_file(str(tmp_path / "d.safetensors"))[0]
    assert "unet.down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_out.0.lora_B.weight" in diff


def test_unsafe_pickle_is_refused(tmp_path, capsys):
    bad = tmp_path / "bad.bin"
    torch.save({"x": torch.zeros(1), "obj": logging.getLogger("x")}, bad)
    assert _run("--input", bad, "--save_to", tmp_path / "o.safetensors") == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and str(bad) in err and "weights-only" in err


# --- what cannot be converted is reported ----------------------------------------------------
def test_unmappable_keys_are_reported(models, tmp_path, capsys):
    src = make_lora(models["sd1"], tmp_path / "k.safetensors", seed=6, conv_dim=None)
    assert _run("--input", src, "--to", "diffusers", "--save_to", tmp_path / "d.safetensors") == 0
    tensors, meta = read_lora_file(str(tmp_path / "d.safetensors"))
    tensors["unet.down_blocks.0.attentions.0.frobnicator.lora_A.weight"] = torch.zeros(4, 16)
    tensors["unet.down_blocks.0.attentions.0.frobnicator.lora_B.weight"] = torch.zeros(16, 4)
    tensors["unet.down_blocks.0.attentions.0.proj_in.lora_B.bias"] = torch.zeros(16)
    bad = tmp_path / "bad.safetensors"
    save_lora_file(tensors, str(bad), meta)
    out = tmp_path / "k2.safetensors"
    assert _run("--input", bad, "--save_to", out) == 1
    err = capsys.readouterr().err
    assert "3 key(s)" in err and "frobnicator" in err and "lora_B.bias" in err and "--allow_unmapped" in err
    assert not out.exists()
    assert _run("--input", bad, "--save_to", out, "--allow_unmapped") == 0
    _assert_same_files(src, out)


def test_model_checks_modules_and_decides_ambiguous_names(models, tiny_path, tmp_path, capsys):
    src = make_lora(models["sd1"], tmp_path / "k.safetensors", seed=7, conv_dim=None)
    tensors = read_lora_file(src)[0]
    mid = {k: v for k, v in tensors.items() if k.startswith("lora_unet_mid_block_")}
    assert _run("--input", src, "--to", "diffusers", "--save_to", tmp_path / "d.safetensors") == 0
    diff = read_lora_file(str(tmp_path / "d.safetensors"))[0]
    only_mid = tmp_path / "mid.safetensors"
    save_lora_file({k: v for k, v in diff.items() if k.startswith("unet.mid_block.")}, str(only_mid))
    out = tmp_path / "mid_k.safetensors"
    assert _run("--input", only_mid, "--save_to", out) == 2  # mid block only: SD1 or SDXL?
    assert "--model" in capsys.readouterr().err
    assert _run("--input", only_mid, "--save_to", out, "--model", tiny_path("sd1")) == 0
    got = read_lora_file(str(out))[0]
    assert got.keys() == mid.keys()
    # an SD1 LoRA checked against an SDXL model: refused in one line
    assert _run("--input", src, "--to", "diffusers", "--save_to", tmp_path / "x.safetensors", "--model", tiny_path("sdxl")) == 2
    assert "SD1/SD2 LoRA" in capsys.readouterr().err
    # a module the model does not have is reported
    diff["unet.mid_block.attentions.0.transformer_blocks.5.attn1.to_q.lora_A.weight"] = torch.zeros(4, 64)
    diff["unet.mid_block.attentions.0.transformer_blocks.5.attn1.to_q.lora_B.weight"] = torch.zeros(64, 4)
    extra = tmp_path / "extra.safetensors"
    save_lora_file(diff, str(extra))
    assert _run("--input", extra, "--save_to", out, "--model", tiny_path("sd1")) == 1
    assert "does not exist in the given --model" in capsys.readouterr().err


def test_errors_are_one_line(models, tmp_path, capsys):
    src = make_lora(models["sd1"], tmp_path / "k.safetensors", seed=8, conv_dim=None)
    junk = tmp_path / "junk.safetensors"
    save_lora_file({"model.weight": torch.zeros(2)}, str(junk))
    cases = [
        (["--input", tmp_path / "nope.safetensors", "--save_to", tmp_path / "o.safetensors"], "not found"),
        (["--input", junk, "--save_to", tmp_path / "o.safetensors"], "no LoRA weights recognised"),
        (["--input", src, "--to", "kohya", "--save_to", tmp_path / "o.safetensors"], "already a kohya LoRA"),
        (["--input", src, "--to", "diffusers", "--save_to", tmp_path / "o.safetensors", "--model", "m", "--family", "sd1"], "give only one"),
        (["--input", tmp_path, "--save_to", tmp_path / "o.safetensors"], "a folder without"),
    ]
    for argv, needle in cases:
        assert _run(*argv) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and needle in err and err.count("\n") == 1, err
    assert _run(*cases[1][0], "--debug") == 2
    assert "Traceback" in capsys.readouterr().err


def test_names_map_both_ways():
    sdxl = "lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_out_0"
    assert lora_names.parse_kohya_name(sdxl) == ("unet", "down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_out.0", True)
    assert lora_names.kohya_name("unet", "down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_out.0", True) == sdxl
    sd = "lora_unet_up_blocks_1_resnets_2_time_emb_proj"
    assert lora_names.parse_kohya_name(sd) == ("unet", "up_blocks.1.resnets.2.time_emb_proj", False)
    assert lora_names.parse_kohya_name("lora_te2_text_model_encoder_layers_3_self_attn_out_proj") == (
        "text_encoder_2", "encoder.layers.3.self_attn.out_proj", False)
    assert lora_names.kohya_name("text_encoder", "encoder.layers.0.mlp.fc1", False) == "lora_te_text_model_encoder_layers_0_mlp_fc1"
    with pytest.raises(lora_names.UnknownName):
        lora_names.parse_kohya_name("lora_unet_down_blocks_0_frob_1")


def test_sd1_file_with_original_layout_names_needs_and_uses_family(models, tmp_path, capsys):
    """Old SD1 tools wrote input_blocks_* names; with --family sd1 they map through SD1's block layout."""
    from library.models.unet_layout import to_compvis

    src = make_lora(models["sd1"], tmp_path / "k.safetensors", seed=9, conv_dim=2)
    unet_only = {k: v for k, v in read_lora_file(src)[0].items() if k.startswith("lora_unet_")}
    renamed = {}
    for key, value in unet_only.items():
        name, _, rest = key.partition(".")
        path = lora_names.dotted(name[len("lora_unet_"):])
        renamed["lora_unet_" + to_compvis(path, lora_names.SD_LAYOUT).replace(".", "_") + "." + rest] = value
    old = tmp_path / "old.safetensors"
    save_lora_file(renamed, str(old))
    save_lora_file(unet_only, str(tmp_path / "new.safetensors"))
    assert _run("--input", old, "--to", "diffusers", "--save_to", tmp_path / "a.safetensors", "--family", "sd1") == 0
    assert _run("--input", tmp_path / "new.safetensors", "--to", "diffusers", "--save_to", tmp_path / "b.safetensors") == 0
    _assert_same_files(tmp_path / "a.safetensors", tmp_path / "b.safetensors")
