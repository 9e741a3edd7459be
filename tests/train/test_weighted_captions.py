"""--weighted_captions and weighted sample prompts: one parser (kohya's grammar) and kohya's
scale-then-renormalise-the-mean weighting, for SD1/SD2 and both SDXL encoders."""

import pytest
import torch

from library.inference.prompt_weights import has_weights, parse_prompt_weights, plain_text
from library.options import namespace_from
from library.train.entry import train
from library.inference.pipelines import prompt_kwargs
from library.inference.prompts import SamplePrompt
from library.options.typed import SamplingOptions
from library.train.sampling import generate_samples
from library.train.setup_model import load_for_training
from library.inference.text_encoding import _core, encode_captions, tokenize, tokenize_weighted
from tests.train.conftest import base_values

SCRIPTS = {"sd1": "train_network", "sdxl": "sdxl_train_network"}


def _approx(parsed):
    return [(t, round(w, 6)) for t, w in parsed]


@pytest.mark.parametrize("text, expected", [
    ("normal text", [("normal text", 1.0)]),
    ("an (important) word", [("an ", 1.0), ("important", 1.1), (" word", 1.0)]),
    ("(unbalanced", [("unbalanced", 1.1)]),
    ("\\(literal\\]", [("(literal]", 1.0)]),
    ("(unnecessary)(parens)", [("unnecessaryparens", 1.1)]),
    ("a (((house:1.3)) [on] a (hill:0.5), sun, (((sky))).",
     [("a ", 1.0), ("house", 1.573), (" ", 1.1), ("on", 1.0), (" a ", 1.1), ("hill", 0.55), (", sun, ", 1.1),
      ("sky", 1.4641), (".", 1.1)]),
    ("a [dim] cat", [("a ", 1.0), ("dim", 0.909091), (" cat", 1.0)]),
    ("[[x]]", [("x", 0.826446)]),
    ("(word:1.2)", [("word", 1.2)]),
    ("stray ) and ] stay", [("stray ) and ] stay", 1.0)]),
    ("a\\\\b", [("a\\b", 1.0)]),
    ("time: 5pm", [("time: 5pm", 1.0)]),
    ("[x:1.5]", [("x:1.5", 0.909091)]),
    ("", [("", 1.0)]),
])
def test_parser_follows_kohyas_grammar(text, expected):
    assert _approx(parse_prompt_weights(text)) == expected


def test_plain_text_and_has_weights():
    assert plain_text("a (red:1.5) \\(ball\\)") == "a red (ball)"
    assert has_weights("a (red) ball") and has_weights("\\(x\\)") and has_weights("[x]")
    assert not has_weights("a red ball, 1:2") and not has_weights("")


@pytest.fixture(scope="module")
def models(tiny_ckpt, tmp_path_factory):
    out = tmp_path_factory.mktemp("w")
    made = {}

    def get(family):
        if family not in made:
            args = namespace_from(base_values(tiny_ckpt(family), out, out / "o", train_data_dir=str(out)), SCRIPTS[family])
            base = load_for_training(args, SCRIPTS[family]).base
            # a real CLIP's final layer norm has a bias, so its outputs' mean (which kohya renormalises to) is not ~0
            for encoder in base.text_encoders:
                torch.nn.init.uniform_(_core(encoder).final_layer_norm.bias, 0.05, 0.15)
            made[family] = base
        return made[family]

    return get


def _kohya_weighting(hidden, weights):
    """What kohya's get_weighted_text_embeddings does after encoding, written out for the test."""
    previous = hidden.float().mean(dim=[-2, -1])
    scaled = hidden * weights.unsqueeze(-1)
    current = scaled.float().mean(dim=[-2, -1])
    return scaled * (previous / current).unsqueeze(-1).unsqueeze(-1)


@pytest.mark.parametrize("max_token_length", [None, 150])
def test_weights_scale_tokens_and_keep_the_mean_sd1(models, max_token_length):
    base = models("sd1")
    captions = ["a photo of a (red:1.5) ball, [blurry]", "a photo of a red ball, blurry"]
    with torch.no_grad():
        weighted = encode_captions(base, captions, max_token_length, None, weighted=True).context
        plain = encode_captions(base, ["a photo of a red ball, blurry"] * 2, max_token_length, None).context
    ids, weights = tokenize_weighted(base.tokenizers[0], captions, max_token_length)
    assert torch.equal(ids, tokenize(base.tokenizers[0], ["a photo of a red ball, blurry"] * 2, max_token_length))
    assert weights.shape == plain.shape[:2]
    red = base.tokenizers[0]("red", add_special_tokens=False).input_ids
    assert sorted(set(weights[0].tolist())) == pytest.approx([1 / 1.1, 1.0, 1.5])
    assert weights[0].tolist().count(1.5) == len(red)
    torch.testing.assert_close(weighted[:1], _kohya_weighting(plain[:1], weights[:1]), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(weighted[0].mean(), plain[0].mean(), rtol=1e-5, atol=1e-7)
    assert torch.equal(weighted[1], plain[1])  # no syntax: exactly the unweighted conditioning
    assert not torch.allclose(weighted[0], plain[0])


def test_sdxl_weights_both_encoders_and_leaves_pooled(models):
    base = models("sdxl")
    with torch.no_grad():
        weighted = encode_captions(base, ["a (red:1.5) ball"], None, None, weighted=True)
        plain = encode_captions(base, ["a red ball"], None, None)
    ids, weights = zip(*(tokenize_weighted(t, ["a (red:1.5) ball"]) for t in base.tokenizers))
    d1 = base.text_encoders[0].config.hidden_size
    for half, w in ((slice(0, d1), weights[0]), (slice(d1, None), weights[1])):
        expected = _kohya_weighting(plain.context[..., half], w)
        torch.testing.assert_close(weighted.context[..., half], expected, rtol=1e-5, atol=1e-6)
        assert not torch.allclose(weighted.context[..., half], plain.context[..., half])
    assert torch.equal(weighted.pooled, plain.pooled)
    long = ["a red ball " * 40, "(red:1.2)"]  # cut mid-caption at 150 tokens, and mostly padding
    for tok in base.tokenizers:  # bigG pads with "!", CLIP-L with EOS: the layout must match tokenize()'s
        for length in (None, 150):
            assert torch.equal(tokenize_weighted(tok, ["a red ball", *long], length)[0],
                               tokenize(tok, ["a red ball", long[0], "red"], length))


@pytest.mark.parametrize("family", ["sd1", "sdxl"])
def test_sample_prompts_use_the_same_weighting(models, family, tmp_path):
    base = models(family)
    assert set(prompt_kwargs(base, "a red ball", None)) == {"prompt", "negative_prompt"}
    kw = prompt_kwargs(base, "a (red:1.5) ball", "[blurry]")
    with torch.no_grad():
        expected = encode_captions(base, ["a (red:1.5) ball", "[blurry]"], None, None, weighted=True)
    torch.testing.assert_close(kw["prompt_embeds"], expected.context[:1].to(kw["prompt_embeds"].dtype))
    torch.testing.assert_close(kw["negative_prompt_embeds"], expected.context[1:].to(kw["prompt_embeds"].dtype))
    if family == "sdxl":
        assert kw["pooled_prompt_embeds"].shape[0] == 1
        assert not prompt_kwargs(base, "(x)", None)["negative_pooled_prompt_embeds"].any()  # empty negative: zeros
    long = prompt_kwargs(base, "(red) " + "word " * 100, None)
    assert long["prompt_embeds"].shape[1] == 152 and long["negative_prompt_embeds"].shape[1] == 152
    paths = generate_samples(base, [SamplePrompt(prompt="a (red:1.5) ball", negative_prompt="[blurry]", width=32,
                                                 height=32, steps=2, seed=1)], str(tmp_path), "s")
    assert len(paths) == 1


def test_training_reads_caption_weights(tiny_ckpt, demo_data, tmp_path):
    for txt in (demo_data / "img" / "10_sks shape").glob("*.txt"):
        txt.write_text("(sks:1.8) shape, [red circle]", encoding="utf-8")
    values = base_values(tiny_ckpt("sdxl"), demo_data, tmp_path / "a", max_train_steps=2, network_train_unet_only=True,
                         cache_text_encoder_outputs=True)
    plain = train(namespace_from(values, "sdxl_train_network"), "sdxl_train_network")
    weighted = train(namespace_from({**values, "output_dir": str(tmp_path / "b"), "weighted_captions": True},
                                    "sdxl_train_network"), "sdxl_train_network")
    assert plain.losses[0] != weighted.losses[0]


def test_zero_weighted_mean_is_left_alone():
    from library.inference.prompt_weights import apply_token_weights

    hidden = torch.tensor([[[1.0, -1.0], [2.0, -2.0]]])
    out = apply_token_weights(hidden, torch.tensor([[1.5, 1.0]]))
    assert torch.isfinite(out).all() and torch.equal(out, torch.tensor([[[1.5, -1.5], [2.0, -2.0]]]))


def test_sample_images_with_clip_skip_use_the_trained_conditioning(models, tmp_path):
    """clip_skip 2 (common for anime SD1.5 models) on sample images: encoded by our encoder exactly as in
    training; diffusers' own clip_skip path fails on transformers v5's CLIP (no text_model attribute)."""
    base = models("sd1")
    kw = prompt_kwargs(base, "a red ball", "blurry", clip_skip=2)
    with torch.no_grad():
        expected = encode_captions(base, ["a red ball", "blurry"], 75, 2)
    torch.testing.assert_close(kw["prompt_embeds"], expected.context[:1].to(kw["prompt_embeds"].dtype))
    assert prompt_kwargs(base, "a red ball", None, clip_skip=1) == {"prompt": "a red ball", "negative_prompt": None}
    paths = generate_samples(base, [SamplePrompt(prompt="a red ball", width=32, height=32, steps=2, seed=1)],
                             str(tmp_path), "s", SamplingOptions(clip_skip=2))
    assert len(paths) == 1
