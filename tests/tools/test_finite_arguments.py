"""Every tool refuses nan/inf in its float arguments before it reads or writes anything.

Today's bug: ``merge_lora --ratios nan`` wrote a LoRA full of NaN with exit 0."""

import pytest

from tools import extract_lora, gen_img, merge_lora, merge_models, resize_lora

CASES = [
    (merge_lora, ["--models", "a.safetensors", "b.safetensors", "--ratios", "1", "nan"], "--ratios"),
    (merge_lora, ["--models", "a.safetensors", "--clamp_quantile", "inf"], "--clamp_quantile"),
    (resize_lora, ["--model", "a.safetensors", "--dynamic_param", "nan"], "--dynamic_param"),
    (extract_lora, ["--model_org", "a", "--model_tuned", "b", "--min_diff", "nan"], "--min_diff"),
    (merge_models, ["--models", "a", "b", "--ratio", "1e999"], "--ratio"),
    (gen_img, ["--ckpt", "a", "--outdir", "OUT", "--scale", "nan"], "--scale"),
]


@pytest.mark.parametrize("tool, argv, option", CASES, ids=[f"{c[0].__name__.split('.')[-1]} {c[2]}" for c in CASES])
def test_nan_and_inf_are_refused_naming_the_option(tool, argv, option, tmp_path, capsys):
    out = tmp_path / "out.safetensors"
    argv = [a.replace("OUT", str(tmp_path / "imgs")) for a in argv]
    with pytest.raises(SystemExit) as e:
        tool.main(argv + (["--save_to", str(out)] if tool is not gen_img else []))
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert option in err and "finite number" in err
    assert not out.exists() and not (tmp_path / "imgs").exists()


def test_finite_negative_ratios_still_parse():
    args = merge_lora.build_parser().parse_args(["--models", "a", "b", "--ratios", "0.5", "-1.5", "--save_to", "x"])
    assert args.ratios == [0.5, -1.5]
