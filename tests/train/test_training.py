"""End-to-end training on tiny SD1.5 / SDXL checkpoints: the loss falls, files are right, resume is exact."""

import os
import re

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from library.errors import UserError
from library.options import namespace_from
from library.train.entry import train
from library.train.loop import Interrupted
from library.train.setup_data import build_dataset
from library.train.setup_model import load_for_training
from library.train.step import StepConfig, batch_loss, loss_options, noise_options
from tests.train.conftest import base_values

KEY = re.compile(r"^lora_(unet|te|te1|te2)_[a-z0-9_]+\.(lora_down\.weight|lora_up\.weight|alpha)$")
SCRIPTS = {"sd1": "train_network", "sdxl": "sdxl_train_network"}


def _eval_loss(args, script, lora=None):
    """Mean loss over 6 batches with fixed noise and timesteps, dropout off."""
    model = load_for_training(args, script)
    if lora:
        model.network.load_weights(lora)
    model.network.eval()
    ds = build_dataset(args, 1)
    ds.set_epoch(1)
    cfg = StepConfig(noise_options(args), loss_options(args, False))
    with torch.no_grad():
        return sum(float(batch_loss(model, ds[i], cfg, torch.Generator().manual_seed(i))) for i in range(6)) / 6


@pytest.mark.parametrize("family", ["sd1", "sdxl"])
def test_loss_falls_and_file_is_kohya_format(family, tiny_ckpt, demo_data, tmp_path):
    script = SCRIPTS[family]
    # The tiny SDXL UNet's first level has no attention: LoCon (conv_dim) gives it the capacity to learn.
    extra = {"network_args": ["conv_dim=8", "conv_alpha=8"]} if family == "sdxl" else {}
    args = namespace_from(base_values(tiny_ckpt(family), demo_data, tmp_path / "out", max_train_steps=40, learning_rate=1e-2,
                                      reg_data_dir=str(demo_data / "reg"), **extra), script)
    result = train(args, script)
    assert result.steps == 40 and len(result.losses) == 40
    before, after = _eval_loss(args, script), _eval_loss(args, script, result.lora)
    assert after < 0.85 * before, (before, after)

    tensors = load_file(result.lora)
    modules = {k.rsplit(".", 2)[0] if k.endswith("weight") else k.rsplit(".", 1)[0] for k in tensors}
    assert all(KEY.match(k) for k in tensors), [k for k in tensors if not KEY.match(k)][:3]
    for m in modules:
        assert {f"{m}.lora_down.weight", f"{m}.lora_up.weight", f"{m}.alpha"} <= set(tensors)
    prefixes = {k.split("_")[1] for k in tensors}
    assert prefixes == ({"unet", "te"} if family == "sd1" else {"unet", "te1", "te2"})
    with safe_open(result.lora, "pt") as f:
        md = f.metadata()
    assert md["ss_network_dim"] == "8" and md["ss_network_alpha"] == "8.0"
    assert md["ss_base_model_version"] == ("sd_v1" if family == "sd1" else "sdxl_base_v1-0")
    assert md["ss_steps"] == "40" and md["ss_num_reg_images"] == "8"
    assert md["modelspec.architecture"].endswith("/lora")
    assert os.path.isfile(tmp_path / "out" / "t_report.html") and os.path.isfile(tmp_path / "out" / "t_loss.png")


class StopAfter:
    """A Ctrl-C stand-in: reports an interrupt at the ``n``-th optimizer step of this run."""

    def __init__(self, n):
        self.n, self.calls = n, 0

    def __call__(self):
        self.calls += 1
        return self.calls >= self.n


def _stress(values):
    """Options that draw random numbers in many places, so a resume that loses any RNG state shows."""
    values.update(gradient_accumulation_steps=2, network_dropout=0.1, network_args=["rank_dropout=0.1"],
                  shuffle_caption=True, caption_tag_dropout_rate=0.2, flip_aug=True, noise_offset=0.05,
                  multires_noise_iterations=2, lr_scheduler="cosine", lr_warmup_steps=2, max_train_steps=10)
    return values


def test_interrupted_twice_and_resumed_ends_bit_identical(tiny_ckpt, demo_data, tmp_path):
    straight = namespace_from(_stress(base_values(tiny_ckpt("sd1"), demo_data, tmp_path / "a")))
    expected = load_file(train(straight).lora)

    values = _stress(base_values(tiny_ckpt("sd1"), demo_data, tmp_path / "b"))
    with pytest.raises(Interrupted) as first:
        train(namespace_from(values), stop_flag=StopAfter(3))
    assert first.value.state_dir.endswith("t-step00000003-state") and os.path.isfile(first.value.lora)
    with pytest.raises(Interrupted) as second:
        train(namespace_from({**values, "resume": first.value.state_dir}), stop_flag=StopAfter(4))
    assert second.value.state_dir.endswith("t-step00000007-state")
    result = train(namespace_from({**values, "resume": second.value.state_dir}))
    assert result.steps == 10
    got = load_file(result.lora)
    assert got.keys() == expected.keys()
    for k in expected:
        assert torch.equal(got[k], expected[k]), k


def test_resume_from_epoch_state_continues_at_next_epoch(tiny_ckpt, demo_data, tmp_path):
    # 8 images x 10 repeats / batch 8 = 10 steps per epoch; 2 epochs
    values = base_values(tiny_ckpt("sd1"), demo_data, tmp_path / "a", train_batch_size=8, max_train_steps=None,
                         max_train_epochs=2, save_every_n_epochs=1, save_state=True)
    expected = load_file(train(namespace_from(values)).lora)
    state = tmp_path / "a" / "t-000001-state"
    assert state.is_dir() and (tmp_path / "a" / "t-000001.safetensors").is_file()
    resumed = train(namespace_from({**values, "output_dir": str(tmp_path / "b"), "resume": str(state)}))
    assert resumed.steps == 20
    got = load_file(resumed.lora)
    assert all(torch.equal(got[k], expected[k]) for k in expected)


def test_resume_refuses_a_state_from_another_run(tiny_ckpt, demo_data, tmp_path):
    values = base_values(tiny_ckpt("sd1"), demo_data, tmp_path / "a", max_train_steps=2, save_state=True)
    train(namespace_from(values))
    with pytest.raises(UserError, match="network_dim: state 8 vs now 4; these cannot change within a run"):
        train(namespace_from({**values, "network_dim": 4, "resume": str(tmp_path / "a" / "t-state")}))


def test_wrong_script_for_the_model_family_is_a_clear_error(tiny_ckpt, demo_data, tmp_path):
    values = base_values(tiny_ckpt("sdxl"), demo_data, tmp_path / "a")
    with pytest.raises(UserError, match="SDXL model; train it with sdxl_train_network.py"):
        train(namespace_from(values), "train_network")


def test_clip_skip_deeper_than_the_text_encoder_is_refused_before_training(tiny_ckpt, demo_data, tmp_path):
    values = base_values(tiny_ckpt("sd1"), demo_data, tmp_path / "a", clip_skip=99)
    with pytest.raises(UserError, match="--clip_skip 99: this model's text encoder has 3 layers; use 1 to 3"):
        train(namespace_from(values))
    assert not any(n.endswith(".safetensors") for n in os.listdir(tmp_path / "a")) if (tmp_path / "a").exists() else True


@pytest.mark.parametrize("extra", [{"fp8_base": True}, {"full_bf16": True}], ids=["fp8_base", "full_bf16"])
def test_bf16_paths_train_on_cpu(extra, tiny_ckpt, demo_data, tmp_path):
    """bf16 autocast with an fp8-stored UNet, and bf16 LoRA weights: both step and save (slow kernels, 2 steps)."""
    values = base_values(tiny_ckpt("sd1"), demo_data, tmp_path / "a", max_train_steps=2, mixed_precision="bf16", **extra)
    result = train(namespace_from(values))
    assert result.steps == 2 and all(torch.isfinite(torch.tensor(result.losses)))
    tensors = load_file(result.lora)
    want = torch.bfloat16 if extra.get("full_bf16") else torch.float32
    assert {t.dtype for k, t in tensors.items() if k.endswith("weight")} == {want}


def test_tensorboard_scalars_samples_and_report(tiny_ckpt, demo_data, tmp_path):
    from PIL import Image
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    prompts = tmp_path / "prompts.txt"
    prompts.write_text("# kohya syntax\nsks shape, red --w 32 --h 32 --s 2 --d 5 --l 4\n", encoding="utf-8")
    values = base_values(tiny_ckpt("sd1"), demo_data, tmp_path / "out", max_train_steps=3, logging_dir=str(tmp_path / "logs"),
                         sample_prompts=str(prompts), sample_every_n_steps=2, save_every_n_steps=2, sample_at_end=True)
    train(namespace_from(values))
    runs = [os.path.join(root) for root, _, files in os.walk(tmp_path / "logs") if any(f.startswith("events") for f in files)]
    acc = EventAccumulator(runs[0])
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert {"loss/current", "loss/average", "loss/epoch", "lr/textencoder", "lr/unet"} <= tags, tags
    assert [e.step for e in acc.Scalars("loss/current")] == [1, 2, 3]
    samples = sorted(os.listdir(tmp_path / "out" / "sample"))
    assert samples == ["t_000002_00_5.png", "t_000003_00_5.png"]  # every 2 steps, and (sample_at_end) the final LoRA
    info = Image.open(tmp_path / "out" / "sample" / samples[0]).text
    assert "sks shape, red" in info["parameters"] and "Seed: 5" in info["parameters"]
    report = (tmp_path / "out" / "t_report.html").read_text(encoding="utf-8")
    assert "t-step00000002.safetensors" in report and "t_000002_00_5.png" in report and "t_000003_00_5.png" in report


def test_persistent_loader_workers_give_the_same_lora(tiny_ckpt, demo_data, tmp_path):
    """One DataLoader serves every epoch: worker processes (kept alive) see the same batches as none."""
    values = base_values(tiny_ckpt("sd1"), demo_data, tmp_path / "a", train_batch_size=8, max_train_steps=None,
                         max_train_epochs=2, flip_aug=True, shuffle_caption=True)
    plain = load_file(train(namespace_from(values)).lora)
    workers = load_file(train(namespace_from({**values, "output_dir": str(tmp_path / "b"), "max_data_loader_n_workers": 2,
                                              "persistent_data_loader_workers": True})).lora)
    assert all(torch.equal(plain[k], workers[k]) for k in plain)
