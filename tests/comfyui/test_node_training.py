"""The node trains the tiny models end to end into a ComfyUI folder tree, through the same library as the CLI."""

import os
import shutil
import sys
import types

import pytest
from safetensors import safe_open

from library.models import load_base_model
from library.options import read_config_file
from networks.lora import create_network_from_weights
from tests.comfyui.conftest import DEMO_IMG


def _inputs(data, **extra):
    values = dict(
        ckpt_name="tiny_sd1.safetensors", use_custom_dataset=True, dataset_path=str(data), lora_checkpoint_folder="run1",
        lora_name="shapes.safetensors", caption_column="text", learning_rate=1e-3, batch_size=2, training_steps=4,
        checkpointing_steps=2, rank=4, random_seed=3, preset="demo", optimizer="AdamW", alpha=2.0, resolution=64,
    )
    values.update(extra)
    return values


@pytest.fixture
def data(tmp_path):
    shutil.copytree(DEMO_IMG, tmp_path / "data")
    return tmp_path / "data"


@pytest.mark.parametrize("family", ["sd1", "sdxl"])
def test_trains_into_comfyui_model_folders(pack, comfy, data, capsys, family):
    node = pack.NODE_CLASS_MAPPINGS["LoRATrainer"]()
    (path,) = getattr(node, node.FUNCTION)(**_inputs(data, ckpt_name=f"tiny_{family}.safetensors"))
    loras, logs = comfy.models / "loras", comfy.models / "lora_logs" / "run1"
    assert path == str(loras / "shapes.safetensors")
    assert os.listdir(loras) == ["shapes.safetensors"]  # no temporary file left
    assert (logs / "shapes-step00000002.safetensors").is_file() and (logs / "shapes.safetensors").is_file()
    assert (logs / "shapes.safetensors").read_bytes() == (loras / "shapes.safetensors").read_bytes()
    assert comfy.updates and comfy.updates[-1] == (4, 4)
    assert [v for v, _ in comfy.updates] == sorted(v for v, _ in comfy.updates)
    assert "Training is finished" in capsys.readouterr().out
    script = "sdxl_train_network" if family == "sdxl" else "train_network"
    options, _ = read_config_file(str(logs / "shapes_options.toml"), script)  # the CLI can repeat the run
    assert options["max_train_steps"] == 4 and options["output_dir"] == str(logs) and options["network_alpha"] == 2.0

    base = load_base_model(comfy.checkpoints / f"tiny_{family}.safetensors")
    te = base.text_encoders if family == "sdxl" else base.text_encoders[0]
    network, _ = create_network_from_weights(1.0, path, base.vae, te, base.unet)
    network.load_weights(path)
    assert {(m.lora_dim, float(m.alpha)) for m in network.all_loras} == {(4, 2.0)}
    with safe_open(path, "pt") as f:
        assert f.metadata()["ss_base_model_version"] == ("sd_v1" if family == "sd1" else "sdxl_base_v1-0")


class Cancelled(Exception):
    """Stands in for comfy.model_management.InterruptProcessingException."""


def test_comfyui_cancel_stops_at_a_step_and_keeps_the_work(pack, comfy, data, monkeypatch):
    calls = []
    mm = types.ModuleType("comfy.model_management")
    mm.unload_all_models = lambda: calls.append("unload")
    mm.soft_empty_cache = lambda: calls.append("empty")

    def interrupted():  # the user presses Cancel during the third step
        calls.append("asked")
        return calls.count("asked") >= 3

    def throw():
        raise Cancelled()

    mm.processing_interrupted = interrupted
    mm.throw_exception_if_processing_interrupted = throw
    comfy.package.model_management = mm
    monkeypatch.setitem(sys.modules, "comfy.model_management", mm)
    node = pack.LoRATrainer()
    with pytest.raises(Cancelled):
        node.train(**_inputs(data, checkpointing_steps=0))
    logs = comfy.models / "lora_logs" / "run1"
    assert calls[:2] == ["unload", "empty"] and calls.count("asked") == 3
    assert (logs / "shapes-step00000003.safetensors").is_file()  # the LoRA at the cancelled step
    assert any(p.name.endswith("-state") for p in logs.iterdir())  # and a state to resume from
    assert os.listdir(comfy.models / "loras") == []  # an unfinished LoRA is not offered to Load LoRA
