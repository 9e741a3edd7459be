"""tools/caption.py end to end on tiny random BLIP / BLIP-2 models built in-process and saved offline.

One thread per test comes from tests/tools/conftest.py."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
from PIL import Image

from library.captioning.caption_files import write_caption
from library.captioning.images import load_in_order
from library.captioning.model_folder import resolve_model_folder
from library.errors import UserError
from tools.caption import main

GREEDY = ["--beam_search", "--num_beams", "1", "--max_length", "8", "--min_length", "2"]
WORDS = ["a", "photo", "of", "man", "woman", "dog", "cat", "red", "blue", "on", "the", "grass", "beach", "smiling"]


def _tiny_vision(image_size=32):
    # a wide init so that different images give different captions
    return dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                image_size=image_size, patch_size=8, initializer_range=0.5)


@pytest.fixture(scope="module")
def blip_dir(tmp_path_factory):
    """A random BLIP captioner as transformers saves one: config, safetensors, BERT tokenizer, processor."""
    from transformers import BertTokenizer, BlipConfig, BlipForConditionalGeneration, BlipProcessor
    from transformers.models.blip.image_processing_pil_blip import BlipImageProcessorPil

    folder = tmp_path_factory.mktemp("blip")
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + WORDS
    tokenizer = BertTokenizer(vocab={w: i for i, w in enumerate(vocab)})
    tokenizer.add_special_tokens({"bos_token": "[DEC]"})  # as Salesforce's BLIP tokenizer
    text = dict(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                max_position_embeddings=32, bos_token_id=tokenizer.bos_token_id, sep_token_id=tokenizer.sep_token_id,
                pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.sep_token_id, initializer_range=0.5)
    config = BlipConfig(text_config=text, vision_config=_tiny_vision(), projection_dim=32, image_text_hidden_size=32)
    torch.manual_seed(0)
    model = BlipForConditionalGeneration(config).eval()
    BlipProcessor(BlipImageProcessorPil(size={"height": 32, "width": 32}), tokenizer).save_pretrained(folder)
    model.save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="module", params=["opt", "t5"])
def blip2_dir(request, tmp_path_factory):
    """A random BLIP-2 (Q-Former + OPT or T5) with a byte-level GPT-2 tokenizer built from the 256 byte symbols."""
    from transformers import Blip2Config, Blip2ForConditionalGeneration, Blip2Processor, GPT2Tokenizer
    from transformers.convert_slow_tokenizer import bytes_to_unicode
    from transformers.models.blip.image_processing_pil_blip import BlipImageProcessorPil

    folder = tmp_path_factory.mktemp(f"blip2_{request.param}")
    vocab = {c: i for i, c in enumerate(bytes_to_unicode().values())}
    vocab.update({"</s>": len(vocab), "<pad>": len(vocab) + 1})
    tokenizer = GPT2Tokenizer(vocab=vocab, merges=[], bos_token="</s>", eos_token="</s>", unk_token="</s>", pad_token="<pad>")
    processor = Blip2Processor(BlipImageProcessorPil(size={"height": 32, "width": 32}), tokenizer, num_query_tokens=4)
    n = len(tokenizer)  # the processor added <image>
    special = dict(bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    if request.param == "opt":
        text = dict(model_type="opt", vocab_size=n, hidden_size=32, num_hidden_layers=1, ffn_dim=64, num_attention_heads=2,
                    max_position_embeddings=64, word_embed_proj_dim=32, init_std=0.5, **special)
    else:
        text = dict(model_type="t5", vocab_size=n, d_model=32, d_kv=16, d_ff=64, num_layers=1, num_heads=2,
                    decoder_start_token_id=tokenizer.pad_token_id, initializer_factor=20.0, **special)
    config = Blip2Config(
        vision_config=_tiny_vision(),
        qformer_config=dict(vocab_size=n, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64),
        text_config=text, num_query_tokens=4, image_token_index=tokenizer.convert_tokens_to_ids("<image>"), image_text_hidden_size=32,
    )
    torch.manual_seed(0)
    Blip2ForConditionalGeneration(config).eval().save_pretrained(folder)
    processor.save_pretrained(folder)
    return str(folder)


def make_images(folder, n=4, names=None):
    os.makedirs(folder, exist_ok=True)
    paths = []
    for i, name in enumerate(names or [f"img{i}.png" for i in range(n)]):
        rng = np.random.RandomState(i)
        path = os.path.join(folder, name)
        Image.fromarray(rng.randint(0, 255, (20 + 4 * i, 24, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    return paths


def read(path):
    with open(path, encoding="utf-8") as f:
        return f.read()


def captions_of(folder, ext=".caption"):
    return {n: read(os.path.join(folder, n)) for n in sorted(os.listdir(folder)) if n.endswith(ext)}


def test_one_caption_file_per_image(blip_dir, tmp_path, capsys):
    make_images(tmp_path, 4)
    assert main([str(tmp_path), "--caption_weights", blip_dir, *GREEDY]) == 0
    caps = captions_of(tmp_path)
    assert sorted(caps) == [f"img{i}.caption" for i in range(4)]
    for text in caps.values():
        assert text.endswith("\n") and text.count("\n") == 1 and text.strip()
        assert set(text.split()) <= set(WORDS)
    assert len(set(caps.values())) > 1  # the images differ, so do the captions
    assert not [n for n in os.listdir(tmp_path) if ".tmp" in n]
    assert "wrote 4 .caption caption file(s)" in capsys.readouterr().out


def test_existing_captions_are_kept_unless_overwrite(blip_dir, tmp_path, capsys):
    make_images(tmp_path, 3)
    (tmp_path / "img0.caption").write_text("my own words\n", encoding="utf-8")
    (tmp_path / "img1.caption").write_text("  \n", encoding="utf-8")  # blank: counts as no caption
    assert main([str(tmp_path), "--caption_weights", blip_dir, *GREEDY]) == 0
    assert read(tmp_path / "img0.caption") == "my own words\n"
    assert read(tmp_path / "img1.caption").strip() and (tmp_path / "img2.caption").exists()
    assert "1 image(s) already had one" in capsys.readouterr().out

    assert main([str(tmp_path), "--caption_weights", blip_dir, "--skip_existing", *GREEDY]) == 0
    assert read(tmp_path / "img0.caption") == "my own words\n"
    assert "nothing to do" in capsys.readouterr().out

    before = captions_of(tmp_path)
    assert main([str(tmp_path), "--caption_weights", blip_dir, "--overwrite", *GREEDY]) == 0
    after = captions_of(tmp_path)
    assert after["img0.caption"] != "my own words\n"
    assert after["img1.caption"] == before["img1.caption"]  # greedy: same words again


def test_nothing_to_do_does_not_load_the_model(tmp_path, capsys):
    model = tmp_path / "no_real_files"
    model.mkdir()
    (model / "config.json").write_text(json.dumps({"model_type": "blip"}))
    for name in ("model.safetensors", "tokenizer.json", "preprocessor_config.json"):
        (model / name).write_text("not loaded")
    make_images(tmp_path / "imgs", 1)
    (tmp_path / "imgs" / "img0.txt").write_text("done\n")
    assert main([str(tmp_path / "imgs"), "--model_path", str(model), "--caption_extension", "txt"]) == 0
    assert "nothing to do" in capsys.readouterr().out


def test_prefix_suffix_and_extension(blip_dir, tmp_path):
    make_images(tmp_path, 2)
    assert main([str(tmp_path), "--caption_weights", blip_dir, *GREEDY]) == 0
    plain = captions_of(tmp_path)
    args = ["--caption_extension", "txt", "--prefix", "Li4mG4ll4gher, ", "--suffix", ", photo"]
    assert main([str(tmp_path), "--caption_weights", blip_dir, *args, *GREEDY]) == 0
    for i in range(2):
        body = plain[f"img{i}.caption"].strip()
        assert read(tmp_path / f"img{i}.txt") == f"Li4mG4ll4gher, {body}, photo\n"


@pytest.mark.parametrize("beams", ["1", "2"])
def test_batch_size_does_not_change_deterministic_captions(blip_dir, tmp_path, beams):
    make_images(tmp_path / "a", 5)
    make_images(tmp_path / "b", 5)
    args = ["--caption_weights", blip_dir, "--beam_search", "--num_beams", beams, "--max_length", "8", "--min_length", "2"]
    assert main([str(tmp_path / "a"), *args, "--batch_size", "1"]) == 0
    assert main([str(tmp_path / "b"), *args, "--batch_size", "3", "--max_data_loader_n_workers", "2"]) == 0
    assert captions_of(tmp_path / "a") == captions_of(tmp_path / "b")


def test_sampling_is_reproducible_with_a_seed(blip_dir, tmp_path):
    make_images(tmp_path / "a", 3)
    make_images(tmp_path / "b", 3)
    args = ["--caption_weights", blip_dir, "--max_length", "8", "--min_length", "2", "--seed", "7", "--batch_size", "2"]
    assert main([str(tmp_path / "a"), *args]) == 0
    assert main([str(tmp_path / "b"), *args]) == 0
    assert captions_of(tmp_path / "a") == captions_of(tmp_path / "b")


def test_unreadable_image_is_skipped_with_a_warning(blip_dir, tmp_path, capsys):
    make_images(tmp_path, 3)
    (tmp_path / "broken.png").write_bytes(b"not a png at all")
    good = tmp_path / "img0.png"
    (tmp_path / "truncated.png").write_bytes(good.read_bytes()[:60])
    assert main([str(tmp_path), "--caption_weights", blip_dir, "--batch_size", "2", *GREEDY]) == 0
    out = capsys.readouterr()
    assert sorted(captions_of(tmp_path)) == ["img0.caption", "img1.caption", "img2.caption"]
    warnings = [line for line in out.err.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 2
    assert any(str(tmp_path / "broken.png") in w for w in warnings)
    assert any(str(tmp_path / "truncated.png") in w for w in warnings)
    assert "2 unreadable image(s) skipped" in out.out


def test_recursive_and_empty_folders(blip_dir, tmp_path, capsys):
    make_images(tmp_path / "img" / "10_woman", 2)
    make_images(tmp_path / "img" / "5_dog" / "deeper", 1)
    assert main([str(tmp_path / "img"), "--caption_weights", blip_dir, *GREEDY]) == 2
    err = capsys.readouterr().err
    assert "--recursive" in err and str(tmp_path / "img") in err
    assert main([str(tmp_path / "img"), "--caption_weights", blip_dir, "--recursive", *GREEDY]) == 0
    assert sorted(captions_of(tmp_path / "img" / "10_woman")) == ["img0.caption", "img1.caption"]
    assert sorted(captions_of(tmp_path / "img" / "5_dog" / "deeper")) == ["img0.caption"]
    assert "Loading weights" not in capsys.readouterr().err  # transformers' bars stay quiet

    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("x")
    assert main([str(tmp_path / "empty"), "--caption_weights", blip_dir]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: no images") and str(tmp_path / "empty") in err and err.count("\n") == 1


def test_model_errors_name_the_path(tmp_path, capsys):
    make_images(tmp_path / "imgs", 1)
    imgs = str(tmp_path / "imgs")
    missing = str(tmp_path / "no_such_model")
    assert main([imgs, "--caption_weights", missing]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and missing in err and err.count("\n") == 1 and "Traceback" not in err

    assert main([imgs]) == 2
    assert "--caption_weights is required" in capsys.readouterr().err

    pth = tmp_path / "model_large_caption.pth"
    pth.write_bytes(b"\0")
    assert main([imgs, "--caption_weights", str(pth)]) == 2
    assert "is a file" in capsys.readouterr().err

    clip = tmp_path / "clip"
    clip.mkdir()
    (clip / "config.json").write_text(json.dumps({"model_type": "clip"}))
    assert main([imgs, "--caption_weights", str(clip)]) == 2
    err = capsys.readouterr().err
    assert str(clip) in err and "not BLIP" in err

    vqa = tmp_path / "vqa"
    vqa.mkdir()
    (vqa / "config.json").write_text(json.dumps({"model_type": "blip", "architectures": ["BlipForQuestionAnswering"]}))
    assert main([imgs, "--caption_weights", str(vqa)]) == 2
    assert "question answering" in capsys.readouterr().err

    partial = tmp_path / "partial"
    partial.mkdir()
    (partial / "config.json").write_text(json.dumps({"model_type": "blip"}))
    for missing, name in (("weights", "model.safetensors"), ("tokenizer", "vocab.txt"), ("image preprocessor", "processor_config.json")):
        assert main([imgs, "--caption_weights", str(partial)]) == 2
        err = capsys.readouterr().err
        assert err == f"error: --caption_weights {partial} has no {missing} file " + err.split(" file ", 1)[1]
        assert err.count("\n") == 1
        (partial / name).write_text("x")
    # every file is there but holds nonsense: still one line naming the folder
    assert main([imgs, "--caption_weights", str(partial)]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[-1].startswith(f"error: --caption_weights {partial}: cannot load")


def test_debug_shows_the_traceback(tmp_path, capsys):
    make_images(tmp_path / "imgs", 1)
    assert main([str(tmp_path / "imgs"), "--caption_weights", str(tmp_path / "nope"), "--debug"]) == 2
    assert "Traceback" in capsys.readouterr().err


def test_bad_options(blip_dir, tmp_path, capsys):
    make_images(tmp_path, 1)
    for bad, word in ((["--caption_extension", ".png"], "image extension"), (["--batch_size", "0"], "--batch_size"),
                      (["--min_length", "9", "--max_length", "3"], "--min_length")):
        assert main([str(tmp_path), "--caption_weights", blip_dir, *bad]) == 2
        assert word in capsys.readouterr().err
    assert not captions_of(tmp_path)


def test_hub_cache_folder_with_one_snapshot(blip_dir, tmp_path):
    snap = tmp_path / "models--Salesforce--blip" / "snapshots" / "abc123"
    snap.parent.mkdir(parents=True)
    os.symlink(blip_dir, snap)
    assert resolve_model_folder(str(tmp_path / "models--Salesforce--blip")) == str(snap)


def test_blip2(blip2_dir, tmp_path):
    make_images(tmp_path / "a", 3)
    make_images(tmp_path / "b", 3)
    args = ["--caption_weights", blip2_dir, "--caption_extension", ".txt", "--prefix", "x, ", *GREEDY]
    assert main([str(tmp_path / "a"), *args, "--batch_size", "1"]) == 0
    assert main([str(tmp_path / "b"), *args, "--batch_size", "3"]) == 0
    caps = captions_of(tmp_path / "a", ".txt")
    assert sorted(caps) == ["img0.txt", "img1.txt", "img2.txt"]
    assert all(text.startswith("x, ") and len(text.strip()) > 3 for text in caps.values())
    assert caps == captions_of(tmp_path / "b", ".txt")
    assert len(set(caps.values())) > 1


def test_prompt_is_cut_off_the_caption(blip_dir, tmp_path):
    """The file holds what the model wrote after the prompt, as kohya cuts BLIP's "a picture of "."""
    from transformers import AutoImageProcessor, AutoTokenizer, BlipForConditionalGeneration

    (path,) = make_images(tmp_path, 1)
    assert main([str(tmp_path), "--caption_weights", blip_dir, "--prompt", "a photo of", *GREEDY]) == 0
    caption = read(tmp_path / "img0.caption").strip()

    model = BlipForConditionalGeneration.from_pretrained(blip_dir, local_files_only=True).eval()
    tokenizer = AutoTokenizer.from_pretrained(blip_dir, local_files_only=True)
    pixels = AutoImageProcessor.from_pretrained(blip_dir, local_files_only=True, backend="pil")(
        images=[Image.open(path).convert("RGB")], return_tensors="pt").pixel_values
    out = model.generate(pixel_values=pixels, input_ids=tokenizer(["a photo of"], return_tensors="pt").input_ids,
                         do_sample=False, num_beams=1, max_new_tokens=8, min_new_tokens=2)
    assert tokenizer.decode(out[0], skip_special_tokens=True) == f"a photo of {caption}"

    assert main([str(tmp_path), "--caption_weights", blip_dir, "--overwrite", "--prompt", "a picture of ", *GREEDY]) == 0
    explicit = read(tmp_path / "img0.caption")
    assert main([str(tmp_path), "--caption_weights", blip_dir, "--overwrite", *GREEDY]) == 0
    assert read(tmp_path / "img0.caption") == explicit  # kohya's BLIP prompt is the default


def test_blip2_with_a_prompt(blip2_dir, tmp_path):
    make_images(tmp_path / "a", 3)
    make_images(tmp_path / "b", 3)
    args = ["--caption_weights", blip2_dir, "--prompt", "a photo of", *GREEDY]
    assert main([str(tmp_path / "a"), *args, "--batch_size", "1"]) == 0
    assert main([str(tmp_path / "b"), *args, "--batch_size", "2"]) == 0
    assert len(captions_of(tmp_path / "a")) == 3 and captions_of(tmp_path / "a") == captions_of(tmp_path / "b")


def test_load_in_order_reads_ahead_and_keeps_order():
    def load(p):
        if p == "bad":
            raise ValueError("boom")
        return p.upper()

    paths = ["a", "bad", "c", "d", "e", "f"]
    for workers in (0, 2):
        got = list(load_in_order(paths, load, workers))
        assert [p for p, _ in got] == paths
        assert isinstance(got[1][1], ValueError) and got[2][1] == "C"


def test_write_caption_is_atomic(tmp_path, monkeypatch):
    target = tmp_path / "a.txt"
    target.write_text("old\n")

    def fail(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(UserError, match="a.txt"):
        write_caption(str(target), "new")
    assert read(target) == "old\n" and os.listdir(tmp_path) == ["a.txt"]
