"""The node trains the tiny models end to end into a ComfyUI folder tree, through the same library as the CLI,
called the way ComfyUI's executor calls it (inside ``torch.inference_mode()``, Cancel raised from the
progress hook)."""

import errno
import json
import os
import shutil

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from library.errors import UserError
from library.models import load_base_model
from library.options import read_config_file
from networks.lora import create_network_from_weights
from tests.comfyui.conftest import DEMO_IMG
from tests.comfyui.fake_comfy import execute_node


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
    (path,) = execute_node(comfy, pack.NODE_CLASS_MAPPINGS["LoRATrainer"], **_inputs(data, ckpt_name=f"tiny_{family}.safetensors"))
    loras, logs = comfy.models / "loras", comfy.models / "lora_logs" / "run1"
    assert path == str(loras / "shapes.safetensors")
    assert os.listdir(loras) == ["shapes.safetensors"]  # no temporary file left
    assert (logs / "shapes-step00000002.safetensors").is_file() and (logs / "shapes.safetensors").is_file()
    assert (logs / "shapes.safetensors").read_bytes() == (loras / "shapes.safetensors").read_bytes()
    assert comfy.updates and comfy.updates[-1] == (4, 4)
    assert [v for v, _ in comfy.updates] == sorted(v for v, _ in comfy.updates)
    assert comfy.events[:2] == ["unload", "empty"]  # ComfyUI's cached models make room first
    assert "Training is finished" in capsys.readouterr().out
    assert not torch.is_inference_mode_enabled()  # the node left the caller's mode alone
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


def test_inference_mode_of_the_caller_changes_nothing(pack, comfy, data):
    """Trained inside ComfyUI's ``torch.inference_mode()`` (and with grad off) = trained outside it."""
    (inside,) = execute_node(comfy, pack.LoRATrainer, **_inputs(data, lora_checkpoint_folder="in", lora_name="in"))
    with torch.no_grad():
        (outside,) = pack.LoRATrainer().train(**_inputs(data, lora_checkpoint_folder="out", lora_name="out"))
    a, b = load_file(inside), load_file(outside)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert any(float(t.abs().sum()) > 0 for k, t in a.items() if "lora_up" in k)  # it trained (lora_up starts at 0)


def _cancel_after_boundary_check(comfy, monkeypatch, n):
    """The user presses Cancel just after the node's n-th check between steps, i.e. while the next step
    computes (where a run spends its time): ComfyUI's hook then raises from that step's progress update."""
    real, calls = comfy.mm.processing_interrupted, []

    def processing_interrupted():
        calls.append(1)
        seen = real()
        if len(calls) == n:
            comfy.mm.interrupt_current_processing(True)
        return seen

    monkeypatch.setattr(comfy.mm, "processing_interrupted", processing_interrupted)


def _state(logs, stem):
    return json.loads((logs / f"{stem}-state" / "train_state.json").read_text())


def test_cancel_raised_by_the_progress_hook_saves_like_ctrl_c(pack, comfy, data, monkeypatch):
    _cancel_after_boundary_check(comfy, monkeypatch, 2)  # Cancel during step 3 of 4
    with pytest.raises(comfy.mm.InterruptProcessingException):  # what ComfyUI shows as "interrupted"
        execute_node(comfy, pack.LoRATrainer, **_inputs(data, checkpointing_steps=0))
    logs = comfy.models / "lora_logs" / "run1"
    assert (logs / "shapes-step00000003.safetensors").is_file()  # the LoRA at the cancelled step
    assert _state(logs, "shapes-step00000003")["global_step"] == 3  # and a state to resume from
    assert os.listdir(comfy.models / "loras") == []  # an unfinished LoRA is not offered to Load LoRA
    assert comfy.updates[-1] == (2, 4) and not comfy.mm.processing_interrupted()  # the hook consumed the Cancel


def test_cancel_seen_between_steps_also_ends_as_interrupted(pack, comfy, data, monkeypatch):
    real_hook = comfy.utils.PROGRESS_BAR_HOOK

    def hook(value, total, preview, node_id=None):  # Cancel lands just after step 2's progress update
        real_hook(value, total, preview, node_id=node_id)
        if value == 2:
            comfy.mm.interrupt_current_processing(True)

    comfy.utils.set_progress_bar_global_hook(hook)
    with pytest.raises(comfy.mm.InterruptProcessingException):
        execute_node(comfy, pack.LoRATrainer, **_inputs(data, checkpointing_steps=0))
    logs = comfy.models / "lora_logs" / "run1"
    assert _state(logs, "shapes-step00000002")["global_step"] == 2
    assert os.listdir(comfy.models / "loras") == [] and not comfy.mm.processing_interrupted()


def test_cancel_during_the_last_step_keeps_the_finished_lora_and_still_stops(pack, comfy, data, monkeypatch):
    _cancel_after_boundary_check(comfy, monkeypatch, 3)  # Cancel during step 4 of 4
    with pytest.raises(comfy.mm.InterruptProcessingException):
        execute_node(comfy, pack.LoRATrainer, **_inputs(data, checkpointing_steps=0))
    logs = comfy.models / "lora_logs" / "run1"
    assert (comfy.models / "loras" / "shapes.safetensors").read_bytes() == (logs / "shapes.safetensors").read_bytes()


def test_a_folder_or_foreign_file_at_the_target_is_refused_before_training(pack, comfy, data, monkeypatch):
    import library.train.entry as entry

    monkeypatch.setattr(entry, "train", lambda *a, **k: pytest.fail("training started"))
    target = comfy.models / "loras" / "shapes.safetensors"
    target.mkdir()
    with pytest.raises(UserError, match="is a folder"):
        execute_node(comfy, pack.LoRATrainer, **_inputs(data))
    target.rmdir()
    target.write_text("my notes")
    with pytest.raises(UserError, match="not a LoRA file"):
        execute_node(comfy, pack.LoRATrainer, **_inputs(data))
    assert target.read_text() == "my notes" and not (comfy.models / "lora_logs" / "run1").exists()


def test_disk_full_at_the_final_copy_keeps_the_trained_lora(pack, comfy, data, monkeypatch):
    loras = comfy.models / "loras"
    save_file({"lora_unet_a.lora_up.weight": torch.zeros(2, 2)}, str(loras / "shapes.safetensors"))
    earlier = (loras / "shapes.safetensors").read_bytes()  # an earlier LoRA the new run would replace
    real_copy = shutil.copyfileobj

    def copy_until_full(src, dst, length=0):  # the disk fills half-way through the copy into models/loras
        if str(getattr(src, "name", "")).endswith(os.path.join("run1", "shapes.safetensors")):
            dst.write(src.read(1000))
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_copy(src, dst, length)

    monkeypatch.setattr(pack.nodes.shutil, "copyfileobj", copy_until_full)
    with pytest.raises(UserError) as info:
        execute_node(comfy, pack.LoRATrainer, **_inputs(data))
    trained = comfy.models / "lora_logs" / "run1" / "shapes.safetensors"
    assert "disk full" in str(info.value) and str(trained) in str(info.value)
    assert load_file(trained)  # the trained LoRA is whole where the message says
    assert os.listdir(loras) == ["shapes.safetensors"] and (loras / "shapes.safetensors").read_bytes() == earlier
