"""Sample prompt files in kohya's three formats (.txt, .toml, .json), through the training run and gen_img."""

import json
import os

import pytest

from library.errors import UserError
from library.options import namespace_from
from library.train.entry import train
from library.inference.prompts import read_prompt_file
from tests.train.conftest import base_values
from tools import gen_img

KOHYA_TOML = """
[prompt]
negative_prompt = "lowres"
width = 32
height = 48
sample_steps = 2
scale = 4.5
sample_sampler = "euler_a"

[[prompt.subset]]
prompt = "sks shape, red"
seed = 5

[[prompt.subset]]
prompt = "sks shape, blue"
width = 64
seed = 6
"""


def _as_tuple(p):
    return (p.prompt, p.negative_prompt, p.width, p.height, p.steps, p.scale, p.seed, p.sampler)


def test_toml_json_and_txt_prompt_files_mean_the_same(tmp_path):
    toml_file = tmp_path / "prompts.toml"
    toml_file.write_text(KOHYA_TOML, encoding="utf-8")
    json_file = tmp_path / "prompts.json"
    json_file.write_text(json.dumps([
        {"prompt": "sks shape, red", "negative_prompt": "lowres", "width": 32, "height": 48, "sample_steps": 2,
         "scale": 4.5, "seed": 5, "sample_sampler": "euler_a"},
        "sks shape, blue --n lowres --w 64 --h 48 --s 2 --l 4.5 --d 6 --ss euler_a",  # kohya also takes lines
    ]), encoding="utf-8")
    txt_file = tmp_path / "prompts.txt"
    txt_file.write_text("sks shape, red --n lowres --w 32 --h 48 --s 2 --l 4.5 --d 5 --ss euler_a\n"
                        "# a comment\nsks shape, blue --n lowres --w 64 --h 48 --s 2 --l 4.5 --d 6 --ss euler_a\n",
                        encoding="utf-8")
    want = [("sks shape, red", "lowres", 32, 48, 2, 4.5, 5, "euler_a"),
            ("sks shape, blue", "lowres", 64, 48, 2, 4.5, 6, "euler_a")]
    for path in (toml_file, json_file, txt_file):
        assert [_as_tuple(p) for p in read_prompt_file(str(path))] == want, path.name


@pytest.mark.parametrize("name,text,message", [
    ("p.toml", "[prompt\nwidth = 3\n", r"p.toml: not valid TOML"),
    ("p.toml", "prompt = \"a cat\"\n", r"p.toml: no \[prompt\] table"),
    ("p.toml", "[prompt]\nwidth = 64\n", r"p.toml: no prompts in the file"),
    ("p.toml", "[prompt]\n[[prompt.subset]]\nprompt = \"a\"\nwidht = 64\n", r"p.toml \[\[prompt.subset\]\] #1: unknown key 'widht'"),
    ("p.toml", "[prompt]\n[[prompt.subset]]\nprompt = \"a\"\nwidth = \"big\"\n", r"width must be a whole number, got 'big'"),
    ("p.toml", "[prompt]\n[[prompt.subset]]\nwidth = 64\n", r"#1: no prompt"),
    ("p.json", "{\"prompt\": \"a cat\"}", r"p.json: the JSON must be a list of prompts"),
    ("p.json", "[{\"prompt\": \"a\", \"sample_sampler\": \"eulr\"}]", r"p.json item 1: unknown sampler 'eulr'"),
    ("p.json", "[1, 2]", r"p.json item 1: a prompt is an object"),
    ("p.json", "not json", r"p.json: not valid JSON"),
])
def test_garbage_prompt_files_are_user_errors_naming_the_file(tmp_path, name, text, message):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    with pytest.raises(UserError, match=message):
        read_prompt_file(str(path))


def test_kohya_keys_for_other_model_families_are_accepted_with_a_warning(tmp_path, caplog):
    path = tmp_path / "flux_and_sd.json"
    path.write_text(json.dumps([{"prompt": "a cat", "guidance_scale": 3.5, "sample_steps": 4}]), encoding="utf-8")
    (cat,) = read_prompt_file(str(path))
    assert (cat.prompt, cat.steps) == ("a cat", 4)
    assert "guidance_scale is a kohya prompt key for other model families" in caplog.text


def test_gen_img_reads_kohya_toml_prompts_with_its_defaults(tmp_path):
    path = tmp_path / "prompts.toml"
    path.write_text("[prompt]\nscale = 3\n[[prompt.subset]]\nprompt = \"a cat\"\n", encoding="utf-8")
    args = gen_img.build_parser().parse_args(["--ckpt", "m", "--outdir", "o", "--from_file", str(path), "--steps", "9"])
    (cat,) = gen_img.read_prompts(args)
    assert (cat.prompt, cat.scale, cat.steps) == ("a cat", 3.0, 9)  # the file's scale, the command line's steps


def test_training_samples_from_a_kohya_toml_prompt_file(tiny_ckpt, demo_data, tmp_path):
    prompts = tmp_path / "prompts.toml"
    prompts.write_text(KOHYA_TOML, encoding="utf-8")
    values = base_values(tiny_ckpt("sd1"), demo_data, tmp_path / "out", max_train_steps=2, sample_prompts=str(prompts),
                         sample_every_n_steps=2)
    train(namespace_from(values))
    samples = sorted(os.listdir(tmp_path / "out" / "sample"))
    assert samples == ["t_000002_00_5.png", "t_000002_01_6.png"]
    from PIL import Image

    first = Image.open(tmp_path / "out" / "sample" / samples[0])
    assert first.size == (32, 48)
    assert "Negative prompt: lowres" in first.text["parameters"] and "Sampler: euler_a" in first.text["parameters"]
