"""One LoRA file format (networks/lora_format.py): every writer spells the network keys as training does,
every reader takes the same keys, and the precision names mean one dtype everywhere.

Each file here comes from a public entry point: training through ``train``, the tools through ``main``.
"""

import json
import re
import shutil

import pytest
import torch
from safetensors.torch import save_file

from library.options import namespace_from
from library.output_paths import file_kind
from library.train.entry import train
from networks.lora_file import read_lora_file
from tests.conftest import DEMO
from tests.test_architecture import ROOT, product_files
from tests.train.conftest import base_values
from tools import convert_lora, extract_lora, merge_lora, resize_lora

# what kohya's tools read to tell a LoRA's shape and base (train_util.SS_METADATA_MINIMUM_KEYS)
NETWORK_KEYS = ("ss_network_module", "ss_network_dim", "ss_network_alpha", "ss_network_args", "ss_v2",
                "ss_base_model_version")


def _network_keys(path):
    meta = read_lora_file(str(path))[1]
    return {k: meta[k] for k in NETWORK_KEYS if k in meta}


@pytest.fixture(scope="module")
def trained(tiny_ckpt, tmp_path_factory):
    """A LoRA trained one step on the tiny SD1 model: rank 4, alpha 4, no network args.

    AdamW's eps is tiny so that every module moves by about the learning rate: the random base's mid-block
    self-attention q/k get gradients near 1e-12, and with the default eps their one-step update sat at the
    1e-6 "zero module" line of the SVD tools, on one side or the other with the thread count."""
    out = tmp_path_factory.mktemp("trained")
    data = out / "data"
    shutil.copytree(DEMO, data)
    values = base_values(tiny_ckpt("sd1"), data, out / "out", max_train_steps=1, network_dim=4, network_alpha=4,
                         optimizer_args=["eps=1e-15"])
    return str(train(namespace_from(values)).lora)


def test_training_writes_kohyas_formats(trained):
    keys = _network_keys(trained)
    assert keys == {"ss_network_module": "networks.lora", "ss_network_dim": "4", "ss_network_alpha": "4.0",
                    "ss_v2": "False", "ss_base_model_version": "sd_v1"}


def test_merge_writes_the_network_keys_as_training_does(trained, tmp_path):
    # a one-file concat merge at ratio 1 is the same network (rank 4, alpha folded to the rank = 4); it used
    # to write alpha as "4" (not kohya's "4.0") and ss_network_args "null" (training and kohya leave it out)
    out = tmp_path / "merged.safetensors"
    assert merge_lora.main(["--models", trained, "--save_to", str(out)]) == 0
    assert _network_keys(out) == _network_keys(trained)


def test_svd_merge_writes_the_network_keys_as_training_does(trained, tmp_path):
    out = tmp_path / "svd.safetensors"
    assert merge_lora.main(["--models", trained, "--new_rank", "4", "--save_to", str(out)]) == 0
    assert _network_keys(out) == _network_keys(trained)


def test_resize_writes_the_network_keys_as_training_does(trained, tmp_path):
    out = tmp_path / "resized.safetensors"
    assert resize_lora.main(["--model", trained, "--new_rank", "4", "--save_to", str(out)]) == 0
    assert _network_keys(out) == _network_keys(trained)


def test_convert_writes_the_network_keys_as_training_does(trained, tmp_path):
    # kohya -> diffusers -> a diffusers file without any ss_* keys -> kohya: convert's own builder fills them in
    folder = tmp_path / "diffusers"
    assert convert_lora.main(["--input", trained, "--to", "diffusers", "--save_to", str(folder)]) == 0
    tensors, meta = read_lora_file(str(folder / "pytorch_lora_weights.safetensors"))
    bare = tmp_path / "bare.safetensors"
    save_file(tensors, str(bare), {k: v for k, v in meta.items() if not k.startswith(("ss_", "sshs_"))})
    out = tmp_path / "back.safetensors"
    assert convert_lora.main(["--input", str(bare), "--family", "sd1", "--save_to", str(out)]) == 0
    assert _network_keys(out) == _network_keys(trained)


def test_extract_writes_the_network_keys_as_training_does(trained, tiny_ckpt, tmp_path):
    out = tmp_path / "extracted.safetensors"
    argv = ["--model_org", tiny_ckpt("sd1"), "--model_tuned", tiny_ckpt("sd1", seed=1), "--dim", "4", "--save_to", str(out)]
    assert extract_lora.main(argv) == 0
    keys = _network_keys(out)
    assert keys.pop("ss_network_args") == "{}"  # kohya's extract writes its (empty) conv arguments
    assert keys == _network_keys(trained)


def _rename_module(path, old, new, out):
    tensors, meta = read_lora_file(str(path))
    renamed = {(new + k[len(old):] if k.startswith(old + ".") else k): v for k, v in tensors.items()}
    assert renamed != tensors
    save_file(renamed, str(out), meta)
    return str(out)


def test_merge_takes_every_key_the_other_readers_take(trained, tmp_path):
    # module names are module paths with "_" for "."; kohya and ComfyUI take either case, and so did
    # convert; merge alone refused capitals ("not plain kohya LoRA keys")
    tensors = read_lora_file(trained)[0]
    old = next(k for k in tensors if k.startswith("lora_unet_") and k.endswith(".lora_down.weight"))[: -len(".lora_down.weight")]
    new = old.replace("proj_in", "Proj_In") if "proj_in" in old else old + "_X"
    odd = _rename_module(trained, old, new, tmp_path / "odd.safetensors")
    out = tmp_path / "merged.safetensors"
    assert merge_lora.main(["--models", odd, "--save_to", str(out)]) == 0
    assert f"{new}.lora_down.weight" in read_lora_file(str(out))[0]
    assert convert_lora.main(["--input", odd, "--to", "diffusers", "--family", "sd1", "--allow_unmapped",
                              "--save_to", str(tmp_path / "d")]) == 0


def test_one_precision_map():
    # the precision names -> torch dtypes live in library/devices.py (dtype_of); the safetensors dtype codes
    # (F16, BF16 ...) are the file format's own table
    allowed = {"library/models/safetensors_read.py", "library/merge/stream_write.py"}
    copies = [p.relative_to(ROOT).as_posix() for p in product_files()
              if p.relative_to(ROOT).as_posix() not in allowed and "torch.bfloat16" in p.read_text(encoding="utf-8")]
    assert not copies, f"precision -> dtype outside library/devices.py (call dtype_of): {copies}"


@pytest.mark.parametrize("precision, dtype", [("fp16", torch.float16), ("bf16", torch.bfloat16), ("float", torch.float32)])
def test_save_precision_names_one_dtype_in_every_tool(trained, tmp_path, precision, dtype):
    outs = {"merge": tmp_path / "m.safetensors", "resize": tmp_path / "r.safetensors"}
    assert merge_lora.main(["--models", trained, "--save_precision", precision, "--save_to", str(outs["merge"])]) == 0
    assert resize_lora.main(["--model", trained, "--new_rank", "2", "--save_precision", precision,
                             "--save_to", str(outs["resize"])]) == 0
    for path in outs.values():
        assert {t.dtype for t in read_lora_file(str(path))[0].values()} == {dtype}


def test_output_guard_reads_headers_with_the_one_reader(trained, tmp_path):
    # library/output_paths.py had its own header parser; damaged headers are "other" files there too
    assert file_kind(trained) == "lora"
    damaged = tmp_path / "damaged.safetensors"
    damaged.write_bytes((10**6).to_bytes(8, "little") + b"{}")
    assert file_kind(str(damaged)) == "other"
    text = (ROOT / "library/output_paths.py").read_text(encoding="utf-8")
    assert "struct" not in text and re.search(r"from library\.safetensors_header import", text)


def test_merged_metadata_is_valid_json_where_json_is_expected(trained, tmp_path):
    out = tmp_path / "merged.safetensors"
    assert merge_lora.main(["--models", trained, trained, "--ratios", "0.5", "0.5", "--save_to", str(out)]) == 0
    meta = read_lora_file(str(out))[1]
    assert "ss_network_args" not in meta  # no conv modules: nothing to say, as training
    assert json.loads(meta["lorasmith.merge"])["mode"] == "concat"
    assert meta["ss_network_dim"] == "8" and meta["ss_network_alpha"] == "8.0"


def test_a_network_file_is_one_to_the_model_loader_and_the_output_guard(tmp_path):
    # kohya's OFT files name modules oft_unet_...; the model loader's own list of LoRA markers missed them
    # (the output guard's did not), so such a file given as the base model got a "not a checkpoint" message
    from library.models import load_base_model
    from library.models.errors import ModelLoadError

    oft = tmp_path / "kohya_oft.safetensors"
    save_file({"oft_unet_down_blocks_0_attentions_0_proj_in.oft_blocks": torch.zeros(4, 2, 2),
               "oft_unet_down_blocks_0_attentions_0_proj_in.alpha": torch.tensor(1.0)}, str(oft))
    assert file_kind(str(oft)) == "lora"
    with pytest.raises(ModelLoadError, match="LoRA/network file"):
        load_base_model(str(oft))


def test_merge_models_knows_every_lora_file(trained, tmp_path, capsys):
    # merge_models looked for "lora_" key heads only: a diffusers/PEFT LoRA got the model loader's
    # "--network_weights" advice instead of the pointer to merge_lora
    from tools import merge_models

    folder = tmp_path / "diffusers"
    assert convert_lora.main(["--input", trained, "--to", "diffusers", "--save_to", str(folder)]) == 0
    tensors, meta = read_lora_file(str(folder / "pytorch_lora_weights.safetensors"))
    lora = str(tmp_path / "diffusers_lora.safetensors")  # as diffusers writes it: no ss_* metadata
    save_file(tensors, lora, {k: v for k, v in meta.items() if not k.startswith(("ss_", "sshs_"))})
    argv = ["--models", lora, lora, "--save_to", str(tmp_path / "m.safetensors")]
    assert merge_models.main(argv) == 2
    assert "tools/merge_lora.py" in capsys.readouterr().err
