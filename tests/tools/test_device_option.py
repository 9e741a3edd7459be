"""--device has one check (library/devices.py): every tool that takes it refuses a bad one alike, before reading a file."""

import pytest

from tools import extract_lora, gen_img, merge_lora, resize_lora

MISSING = "no_such_file.safetensors"
TOOLS = {
    "resize_lora": lambda dev, out: resize_lora.main(["--model", MISSING, "--save_to", out, "--device", dev]),
    "extract_lora": lambda dev, out: extract_lora.main(["--model_org", MISSING, "--model_tuned", MISSING, "--save_to", out, "--device", dev]),
    "gen_img": lambda dev, out: gen_img.main(["--ckpt", MISSING, "--outdir", out[: -len(".safetensors")], "--prompt", "a cat", "--device", dev]),
    "merge_lora": lambda dev, out: merge_lora.main(["--models", MISSING, "--new_rank", "4", "--save_to", out, "--device", dev]),
}


@pytest.mark.parametrize("tool", sorted(TOOLS))
@pytest.mark.parametrize("device, says", [("gpu0", "is not a device name"), ("cuda:99", "cuda")])
def test_bad_device_is_refused_before_any_file_is_read(tool, device, says, tmp_path, capsys):
    rc = TOOLS[tool](device, str(tmp_path / "out.safetensors"))
    err = capsys.readouterr().err
    assert rc == 2
    assert f"--device {device}" in err and says in err and MISSING not in err


def test_captioning_uses_the_same_check():
    from library.captioning.captioner import pick_device
    from library.errors import UserError

    with pytest.raises(UserError, match="--device gpu0 is not a device name"):
        pick_device("gpu0")
    assert pick_device(None) in ("cpu", "cuda") and pick_device("cpu") == "cpu"


def test_the_lora_maths_tools_offer_one_device_option():
    """resize, extract and merge compute on --device: one definition (library/merge/tool_args.py), the CPU by default."""
    def device_action(parser):
        (action,) = [a for a in parser._actions if "--device" in a.option_strings]
        return action.default, action.help

    parsers = [extract_lora.build_parser(), resize_lora.build_parser(), merge_lora.build_parser()]
    assert {device_action(p) for p in parsers} == {("cpu", "device for the SVD, e.g. cuda (default cpu)")}
