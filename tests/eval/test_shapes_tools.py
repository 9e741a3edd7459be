"""The shapes-model builder and the class-image tool, through their command lines (fast: smoke budgets, tiny models)."""

import hashlib

import pytest
from safetensors.torch import load_file

from library.models import load_base_model
from tools.make_class_images import main as class_images
from tools.make_shapes_model import main as make_shapes


def _digest(path):
    sd = load_file(str(path))
    h = hashlib.sha256()
    for k in sorted(sd):
        h.update(k.encode())
        h.update(sd[k].numpy().tobytes())
    return h.hexdigest()


def test_shapes_model_is_deterministic_sd1_layout_and_loads(tmp_path, capsys):
    a, b, c = tmp_path / "a.safetensors", tmp_path / "b.safetensors", tmp_path / "c.safetensors"
    assert make_shapes(["--out", str(a), "--budget", "smoke", "--seed", "1"]) == 0
    assert make_shapes(["--out", str(b), "--budget", "smoke", "--seed", "1"]) == 0
    assert make_shapes(["--out", str(c), "--budget", "smoke", "--seed", "2"]) == 0
    assert _digest(a) == _digest(b) != _digest(c)
    model = load_base_model(str(a))
    assert (model.family, model.prediction_type, model.vae_scale_factor) == ("sd1", "epsilon", 0.18215)
    keys = load_file(str(a)).keys()
    assert "model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight" in keys
    assert "first_stage_model.quant_conv.weight" in keys
    assert "cond_stage_model.transformer.text_model.embeddings.token_embedding.weight" in keys


def test_shapes_model_v_prediction(tmp_path):
    out = tmp_path / "v.safetensors"
    assert make_shapes(["--out", str(out), "--budget", "smoke", "--v_parameterization"]) == 0
    assert load_base_model(str(out)).prediction_type == "v_prediction"


def test_smoke_budget_needs_out():
    with pytest.raises(SystemExit):
        make_shapes(["--budget", "smoke"])


def _class_args(ckpt, out, n):
    return ["--model", ckpt, "--class_prompt", "a star", "--num_class_images", str(n), "--out", str(out),
            "--W", "64", "--H", "64", "--steps", "2", "--seed", "5"]


def test_class_images_have_captions_and_resume_identically(tiny_ckpt, tmp_path):
    out = tmp_path / "reg" / "1_star"
    assert class_images(_class_args(tiny_ckpt("sd1"), out, 3)) == 0
    pngs = sorted(out.glob("*.png"))
    assert [p.name for p in pngs] == ["class_00000.png", "class_00001.png", "class_00002.png"]
    assert all(p.with_suffix(".txt").read_text().strip() == "a star" for p in pngs)
    first = {p.name: p.read_bytes() for p in pngs}
    kept = out / "class_00000.png"
    kept_mtime = kept.stat().st_mtime_ns
    (out / "class_00001.png").unlink()  # as if interrupted before image 1 was written
    (out / "class_00002.txt").unlink()
    assert class_images(_class_args(tiny_ckpt("sd1"), out, 4)) == 0
    assert sorted(p.name for p in out.glob("*.png")) == [f"class_{i:05d}.png" for i in range(4)]
    assert (out / "class_00001.png").read_bytes() == first["class_00001.png"]  # same seed, same image
    assert kept.stat().st_mtime_ns == kept_mtime  # existing images are not redone
    assert (out / "class_00002.txt").read_text().strip() == "a star"
    assert not (out / ".partial").exists()


def test_class_images_bad_count_is_a_clear_error_before_loading(tmp_path, capsys):
    rc = class_images(_class_args(str(tmp_path / "missing.safetensors"), tmp_path / "reg", 0))
    assert rc == 2
    assert "--num_class_images 0" in capsys.readouterr().err


def test_unknown_words_never_hold_the_concept_tokens_or_the_worlds_words():
    import torch

    from library.eval import shapes_data
    from library.eval.shapes_model import shapes_configs, unknown_words, with_unknown_words
    from library.models import assemble, build_models

    cfg = shapes_configs()
    tokenizer = assemble(cfg, build_models(cfg, device="cpu", seed=0)).tokenizers[0]
    words = unknown_words(tokenizer)
    assert len(words) > 10000 and words == unknown_words(tokenizer)
    assert not set(words) & set(shapes_data.HELD_OUT_WORDS + shapes_data.SHAPES + tuple(shapes_data.COLOURS))
    assert {"sks", "ohwx"} <= set(shapes_data.HELD_OUT_WORDS)

    texts = ["a red star, top left", "a star", ""] * 200
    out = with_unknown_words(texts, words, 0.3, torch.Generator().manual_seed(0))
    assert out == with_unknown_words(texts, words, 0.3, torch.Generator().manual_seed(0))
    changed = [(t, o) for t, o in zip(texts, out) if t != o]
    assert 0.15 < len(changed) / 400 < 0.45  # about 30 % of the 400 captions with an "a"
    assert all(o.split(" ", 1)[1] == t.split(" ", 1)[1] and o.split(" ")[0] in words for t, o in changed)
    assert all(o == "" for t, o in zip(texts, out) if t == "")  # the empty prompt stays empty
