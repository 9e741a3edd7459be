"""The LoRA tools handle plain LoRA/LoCon files; a LoHa/LoKr/OFT/IA3/... file is refused with one line naming
the file and its kind (before any model loads), never mis-read or half converted."""

import os

import pytest
import torch
from safetensors.torch import save_file

from tools import convert_lora, gen_img, merge_lora, resize_lora

KINDS = {
    "loha": ({"lora_unet_a.hada_w1_a": torch.zeros(2, 2), "lora_unet_a.hada_w1_b": torch.zeros(2, 2),
              "lora_unet_a.hada_w2_a": torch.zeros(2, 2), "lora_unet_a.hada_w2_b": torch.zeros(2, 2),
              "lora_unet_a.alpha": torch.tensor(1.0)}, "LoHa"),
    "lokr": ({"lora_unet_a.lokr_w1": torch.zeros(2, 2), "lora_unet_a.lokr_w2": torch.zeros(2, 2)}, "LoKr"),
    "oft": ({"lora_unet_a.oft_blocks": torch.zeros(4, 2, 2), "lora_unet_a.alpha": torch.tensor(1e-3)}, "OFT"),
    "ia3": ({"lora_unet_a.weight": torch.zeros(2), "lora_unet_a.on_input": torch.tensor(True)}, "IA3"),
    "dora": ({"lora_unet_a.lora_down.weight": torch.zeros(2, 4), "lora_unet_a.lora_up.weight": torch.zeros(4, 2),
              "lora_unet_a.dora_scale": torch.ones(4, 1)}, "DoRA"),
}


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_tools_refuse_a_kind_they_cannot_handle(kind, tmp_path, capsys):
    tensors, label = KINDS[kind]
    path = str(tmp_path / f"{kind}.safetensors")
    save_file(tensors, path)
    out = str(tmp_path / "out.safetensors")
    runs = {
        "resize_lora.py": lambda: resize_lora.main(["--model", path, "--save_to", out, "--new_rank", "2"]),
        "merge_lora.py": lambda: merge_lora.main(["--models", path, "--save_to", out]),
        "convert_lora.py": lambda: convert_lora.main(["--input", path, "--save_to", out, "--family", "sd1"]),
        "gen_img.py": lambda: gen_img.main(["--ckpt", str(tmp_path / "no_model_needed.safetensors"), "--outdir",
                                            str(tmp_path / "img"), "--prompt", "a", "--network_weights", path]),
    }
    for tool, run in runs.items():
        assert run() == 2, tool
        err = capsys.readouterr().err
        assert err.startswith("error: ") and err.count("\n") == 1, (tool, err)
        assert path in err and label in err and tool in err, (tool, err)
    assert not os.path.exists(out)
