"""tools/gen_img.py: <lora:name:w> tags, job planning, and 2-step generations on tiny models."""

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from library.errors import UserError
from library.inference.generate import LoraStack, LoraUse, generate, plan_jobs
from library.inference.lora_tags import LoraTag, resolve_lora, split_lora_tags
from library.models import load_base_model
from library.inference.prompts import SamplePrompt, parse_prompt_line
from tools import gen_img

from .lora_utils import make_lora


def test_lora_tags_parsed_and_removed():
    text, tags = split_lora_tags("a cat <lora:style:0.8>, sitting <lora:detail> <LORA:two:0.5:1.5> <lora:named:te=0.2>")
    assert text == "a cat, sitting"
    assert tags == [LoraTag("style", 0.8, 0.8), LoraTag("detail", 1.0, 1.0), LoraTag("two", 0.5, 1.5), LoraTag("named", 0.2, 0.2)]
    assert split_lora_tags("<lora:x:unet=0.5> a")[1] == [LoraTag("x", 1.0, 0.5)]
    assert split_lora_tags("no tags here") == ("no tags here", [])
    for bad, needle in (("<lora:x:abc>", "not a number"), ("<lora::1>", "no LoRA name"), ("<lora:x:1:2:3>", "3 weights"), ("<lora:x:foo=1>", "foo")):
        with pytest.raises(UserError, match=needle):
            split_lora_tags(f"a {bad}", "prompt 1")


def test_lora_lookup_in_lora_dir(tmp_path):
    (tmp_path / "sub").mkdir()
    for name in ("Style.safetensors", "sub/detail.safetensors", "notes.txt"):
        (tmp_path / name).write_bytes(b"x")
    assert resolve_lora("Style", tmp_path) == tmp_path / "Style.safetensors"
    assert resolve_lora("style", tmp_path) == tmp_path / "Style.safetensors"  # case-insensitive fallback
    assert resolve_lora("detail", tmp_path) == tmp_path / "sub" / "detail.safetensors"
    with pytest.raises(UserError) as info:
        resolve_lora("missing", tmp_path, "prompt 1")
    msg = str(info.value)
    assert "'missing' not found" in msg and str(tmp_path) in msg and "Style, detail" in msg and "\n" not in msg
    with pytest.raises(UserError, match="--lora_dir"):
        resolve_lora("x", None)
    with pytest.raises(UserError, match="no such folder"):
        resolve_lora("x", tmp_path / "nope")


def test_plan_jobs_seeds_and_weights(tmp_path):
    for name in ("a", "b"):
        (tmp_path / f"{name}.safetensors").write_bytes(b"x")
    prompts = [
        parse_prompt_line("one <lora:a:0.5> <lora:a:0.25> <lora:b:1:0> --d 100 --ss euler_a", "p"),
        SamplePrompt("two"),
        SamplePrompt("three"),
    ]
    jobs = plan_jobs(prompts, images_per_prompt=2, seed=7, lora_dir=str(tmp_path))
    assert [j.sample.seed for j in jobs] == [100, 101, 7, 8, 9, 10]
    assert [j.sampler for j in jobs] == ["euler_a", "euler_a"] + ["ddim"] * 4
    assert jobs[0].sample.prompt == "one" and jobs[0].raw_prompt.startswith("one <lora:a:0.5>")
    assert [(u.name, u.te, u.unet) for u in jobs[0].loras] == [("a", 0.75, 0.75), ("b", 1.0, 0.0)]
    assert jobs[2].loras == [] and [j.index for j in jobs] == list(range(6))


@pytest.fixture(scope="module")
def sd1(tiny_path, tmp_path_factory):
    folder = tmp_path_factory.mktemp("gen_loras")
    path = tiny_path("sd1")
    model = load_base_model(path)
    make_lora(model, folder / "style.safetensors", seed=1, std=0.2)
    return path, model, folder


def _pixels(path):
    return np.asarray(Image.open(path).convert("RGB"), dtype=np.int16)


def test_cli_writes_pngs_with_parameters(sd1, tmp_path, capsys):
    ckpt, _, loras = sd1
    out = tmp_path / "out"
    argv = ["--ckpt", str(ckpt), "--outdir", str(out), "--prompt", "a cat <lora:style:0.7> --n blurry --d 5",
            "--W", "64", "--H", "64", "--steps", "2", "--lora_dir", str(loras), "--images_per_prompt", "2", "--sampler", "euler"]
    assert gen_img.main(argv) == 0
    files = sorted(out.glob("*.png"))
    assert len(files) == 2 and files[0].name.endswith("_5.png") and files[1].name.endswith("_6.png")
    image = Image.open(files[0])
    assert image.size == (64, 64)
    params = image.text["parameters"]
    assert params.startswith("a cat <lora:style:0.7>\nNegative prompt: blurry\n")
    assert "Steps: 2, Sampler: euler, CFG scale: 7.5, Seed: 5, Size: 64x64" in params
    assert image.text["prompt"] == "a cat" and image.text["seed"] == "5" and '"name": "style"' in image.text["loras"]
    assert "wrote" in capsys.readouterr().out

    argv = ["--ckpt", str(ckpt), "--outdir", str(out), "--prompt", "a <lora:styel:1>", "--lora_dir", str(loras)]
    assert gen_img.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "'styel' not found" in err and "available: style" in err and err.count("\n") == 1
    assert gen_img.main(["--ckpt", str(ckpt), "--outdir", str(out), "--prompt", "a --w 60"]) == 2
    assert "multiple of 8" in capsys.readouterr().err
    alien = tmp_path / "alien.safetensors"
    save_file({"lora_unet_nowhere.lora_down.weight": torch.zeros(1, 4), "lora_unet_nowhere.lora_up.weight": torch.zeros(4, 1)}, str(alien))
    assert gen_img.main(["--ckpt", str(ckpt), "--outdir", str(out), "--prompt", "a", "--network_weights", str(alien)]) == 2
    assert "alien.safetensors" in capsys.readouterr().err  # refused before any image is made
    assert gen_img.main(["--ckpt", str(ckpt), "--outdir", str(out), "--prompt", "a", "--network_weights", str(alien), "--network_mul", "1", "2"]) == 2
    assert "--network_mul" in capsys.readouterr().err
    assert len(list(out.glob("*.png"))) == 2


def test_lora_weight_zero_is_base_and_hook_merge_agree(sd1, tmp_path):
    ckpt, model, loras = sd1
    line = "a red house {} --d 3 --s 2 --w 64 --h 64"
    prompts = [parse_prompt_line(line.format(t), "p") for t in ("", "<lora:style:0>", "<lora:style:1>")]
    jobs = plan_jobs(prompts, seed=0, lora_dir=str(loras))
    paths = generate(model, jobs, tmp_path / "a", sequential_file_name=True)
    base, zero, one = (_pixels(p) for p in paths)
    assert np.array_equal(base, zero)
    assert np.abs(base - one).max() > 8  # the LoRA is visible at weight 1
    assert [p.name for p in paths] == ["im_000001.png", "im_000002.png", "im_000003.png"]

    # the same LoRA given on the command line (hooked), then merged into the weights
    use = LoraUse(loras / "style.safetensors", 1.0, 1.0)
    hooked = generate(model, jobs[:1], tmp_path / "b", global_loras=[use])
    assert np.array_equal(_pixels(hooked[0]), one)
    merged_model = load_base_model(ckpt)
    stack = LoraStack(merged_model)
    stack.merge(use)
    merged = generate(merged_model, jobs[:1], tmp_path / "c", stack=stack)
    assert np.abs(_pixels(merged[0]) - one).max() <= 2  # float rounding of merged vs hooked weights only
    assert '"merged": true' in Image.open(merged[0]).text["loras"]


def test_sdxl_two_step_generation_with_lora_tag(tiny_path, tmp_path):
    model = load_base_model(tiny_path("sdxl"))
    make_lora(model, tmp_path / "xl.safetensors", seed=2, std=0.2, conv_dim=None)
    prompts = [parse_prompt_line(f"a dog {t} --d 1 --s 2 --w 64 --h 64 --ss dpmsolver++", "p") for t in ("", "<lora:xl:0>", "<lora:xl:1>")]
    paths = generate(model, plan_jobs(prompts, seed=0, lora_dir=str(tmp_path)), tmp_path / "out")
    base, zero, one = (_pixels(p) for p in paths)
    assert base.shape == (64, 64, 3) and np.array_equal(base, zero) and not np.array_equal(base, one)


def test_prompt_file_and_command_line_defaults(tmp_path):
    f = tmp_path / "prompts.txt"
    f.write_text("# comment\na cat <lora:x:0.5> --w 768 --s 5\n\na dog --n ugly --ss euler_a\n", encoding="utf-8")
    args = gen_img.build_parser().parse_args(["--ckpt", "m", "--outdir", "o", "--from_file", str(f), "--prompt", "first",
                                              "--negative_prompt", "bad", "--W", "640", "--steps", "12"])
    first, cat, dog = gen_img.read_prompts(args)
    assert (first.prompt, first.width, first.height, first.steps, first.negative_prompt) == ("first", 640, None, 12, "bad")
    assert (cat.prompt, cat.width, cat.steps, cat.negative_prompt) == ("a cat <lora:x:0.5>", 768, 5, "bad")
    assert (dog.negative_prompt, dog.sampler, dog.width) == ("ugly", "euler_a", 640)
    args = gen_img.build_parser().parse_args(["--ckpt", "m", "--outdir", "o", "--from_file", str(tmp_path / "none.txt")])
    with pytest.raises(UserError, match="--from_file .*none.txt: file not found"):
        gen_img.read_prompts(args)
    with pytest.raises(UserError, match="no prompt"):
        gen_img.read_prompts(gen_img.build_parser().parse_args(["--ckpt", "m", "--outdir", "o"]))


@pytest.mark.parametrize("argv, words", [
    (["--prompt", "a --w 100000"], "--w (width) must be between 8 and 4096"),
    (["--prompt", "a --s 1000000000"], "--s (steps) must be between 1 and 1000"),
    (["--prompt", "a --l nan"], "--l (scale) must be between"),
    (["--prompt", "a", "--W", "8192"], "at most 4096"),
    (["--prompt", "a", "--steps", "5000"], "between 1 and 1000"),
    (["--prompt", "a", "--W", "0"], "width (--W / --w) 0 must be a positive multiple of 8"),
    (["--prompt", "a", "--clip_skip", "99"], "--clip_skip 99: this model's text encoder has"),
    (["--prompt", "a", "--clip_skip", "0"], "--clip_skip 0: this model's text encoder has"),
])
def test_sizes_and_steps_have_upper_bounds(sd1, tmp_path, capsys, argv, words):
    out = tmp_path / "out"
    assert gen_img.main(["--ckpt", str(sd1[0]), "--outdir", str(out), *argv]) == 2
    assert words in capsys.readouterr().err
    assert not out.exists()
