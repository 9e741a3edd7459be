"""Speed levers and memory release (library/train/speed.py, library/train/memory.py) on tiny models, fp32."""

import logging
import os

import pytest
import torch
from safetensors.torch import load_file

from library.options import namespace_from
from library.train import speed
from library.train.entry import train
from library.train.loop import Interrupted
from library.train.memory import is_freed
from library.train.optimizers import build_optimizer
from library.train.setup_data import attach_caches, build_dataset
from library.train.setup_model import load_for_training
from tests.train.conftest import base_values
from tests.train.test_training import StopAfter, _stress

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _sdxl_cached_te(tiny_ckpt, demo_data, out, prompts, **extra):
    samples = dict(sample_prompts=str(prompts), sample_every_n_steps=2) if prompts else {}
    return base_values(tiny_ckpt("sdxl"), demo_data, out, max_train_steps=2, network_train_unet_only=True,
                       cache_latents=True, **samples, **extra)


def test_cached_text_encoder_outputs_free_the_encoders_and_samples_stay_the_same(tiny_ckpt, demo_data, tmp_path, caplog):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("sks shape, red --w 32 --h 32 --s 2 --d 5 --l 4\nblue --n red --w 32 --h 32 --s 2 --d 6\n",
                       encoding="utf-8")
    live = train(namespace_from(_sdxl_cached_te(tiny_ckpt, demo_data, tmp_path / "a", prompts), "sdxl_train_network"),
                 "sdxl_train_network")
    with caplog.at_level(logging.INFO, logger="lorasmith.train"):
        cached = train(namespace_from(_sdxl_cached_te(tiny_ckpt, demo_data, tmp_path / "b", prompts,
                                                      cache_text_encoder_outputs=True), "sdxl_train_network"),
                       "sdxl_train_network")
    assert "text encoders freed" in caplog.text
    a, b = load_file(live.lora), load_file(cached.lora)  # batches of 8 vs 2 captions: GEMM rounding only
    worst = max(float((a[k] - b[k]).abs().max()) for k in a)
    assert worst < 1e-3, worst  # 2 AdamW steps of lr 5e-3 move a weight by up to 1e-2
    names = sorted(os.listdir(tmp_path / "a" / "sample"))
    assert len(names) == 2 and names == sorted(os.listdir(tmp_path / "b" / "sample"))


@pytest.mark.parametrize("family", ["sd1", "sdxl"])
def test_prompts_encoded_up_front_give_the_same_sample_images(family, tiny_ckpt, tmp_path):
    from library.models import load_base_model
    from library.inference.prompts import parse_prompt_line
    from library.options.typed import SamplingOptions
    from library.train.sampling import encode_sample_prompts, generate_samples

    base = load_base_model(tiny_ckpt(family))
    prompts = [parse_prompt_line(line) for line in ("sks shape, red --w 32 --h 32 --s 2 --d 5 --l 4",
                                                    "blue --n red, green --w 32 --h 32 --s 2 --d 6",
                                                    "no guidance --w 32 --h 32 --s 2 --d 7 --l 1",
                                                    "a (red:1.3) shape --w 32 --h 32 --s 2 --d 8")]
    clip_skip = None  # clip_skip > 1 fails in diffusers' SD pipeline with transformers v5 (no .text_model), with or without this
    live = generate_samples(base, prompts, str(tmp_path / "live"), "s", SamplingOptions(clip_skip=clip_skip))
    conditioning = encode_sample_prompts(base, prompts, clip_skip=clip_skip)
    from library.train.memory import free

    free(base.text_encoders)
    cached = generate_samples(base, prompts, str(tmp_path / "cached"), "s", SamplingOptions(clip_skip=clip_skip),
                              conditioning=conditioning)
    assert len(live) == 4
    for x, y in zip(live, cached):
        assert open(x, "rb").read() == open(y, "rb").read()


def test_text_encoder_weights_are_gone_after_caching(tiny_ckpt, demo_data, tmp_path):
    args = namespace_from(_sdxl_cached_te(tiny_ckpt, demo_data, tmp_path, None, cache_text_encoder_outputs=True), "sdxl_train_network")
    model = load_for_training(args, "sdxl_train_network")
    ds = build_dataset(args, 1)
    assert not any(is_freed(te) for te in model.text_encoders)
    attach_caches(args, ds, model, 0, 1, lambda: None, progress=False)
    assert all(is_freed(te) for te in model.text_encoders) and not is_freed(model.base.vae)


def test_lowram_frees_the_vae_once_latents_are_cached(tiny_ckpt, demo_data, tmp_path):
    args = namespace_from(base_values(tiny_ckpt("sd1"), demo_data, tmp_path, cache_latents=True, lowram=True))
    model = load_for_training(args, "train_network")
    attach_caches(args, build_dataset(args, 1), model, 0, 1, lambda: None, progress=False)
    assert is_freed(model.base.vae) and not any(is_freed(te) for te in model.text_encoders)


def _resume_matches_straight(values, stop_at):
    expected = load_file(train(namespace_from(values("a"))).lora)
    with pytest.raises(Interrupted) as stopped:
        train(namespace_from(values("b")), stop_flag=StopAfter(stop_at))
    got = load_file(train(namespace_from({**values("b"), "resume": stopped.value.state_dir})).lora)
    assert got.keys() == expected.keys() and all(torch.equal(got[k], expected[k]) for k in expected)


def test_resume_is_bit_identical_with_every_lever_on(tiny_ckpt, demo_data, tmp_path):
    """Fused AdamW (the default now), --lowram/--highvram, cached latents (VAE freed), RNG-heavy options."""
    _resume_matches_straight(lambda out: _stress(base_values(
        tiny_ckpt("sd1"), demo_data, tmp_path / out, lowram=True, highvram=True, cache_latents=True, max_train_steps=6)), 3)


def test_resume_is_bit_identical_with_bf16_autocast_on_the_cpu(tiny_ckpt, demo_data, tmp_path):
    """--mixed_precision bf16: the fastest CPU step measured on an AMX host (docs/benchmarks.md); bf16 weights,
    CPU autocast, cached latents overlapping the load, fused AdamW."""
    _resume_matches_straight(lambda out: base_values(
        tiny_ckpt("sd1"), demo_data, tmp_path / out, mixed_precision="bf16", cache_latents=True, network_dropout=0.1,
        noise_offset=0.05, max_train_steps=4), 2)


@pytest.mark.slow
def test_resume_is_bit_identical_with_torch_compile(tiny_ckpt, demo_data, tmp_path):
    """--torch_compile with the eager backend: dynamo traces the LoRA-hooked UNet (the wiring); inductor's code
    generation for the tiny UNet takes many minutes on 2 shared cores, so it is not run here. Even tracing costs
    about a minute per run on this machine, hence few steps and a UNet-only LoRA."""
    _resume_matches_straight(lambda out: base_values(
        tiny_ckpt("sd1"), demo_data, tmp_path / out, torch_compile=True, dynamo_backend="eager", network_dropout=0.1,
        network_train_unet_only=True, max_train_steps=4, noise_offset=0.05), 2)


def test_torch_compile_compiles_the_lora_hooked_unet(tiny_ckpt, demo_data, tmp_path):
    args = namespace_from(base_values(tiny_ckpt("sd1"), demo_data, tmp_path, torch_compile=True, dynamo_backend="eager"))
    model = load_for_training(args, "train_network")
    assert model.base.unet._compiled_call_impl is not None  # compiled in place: names and state_dict keys unchanged
    assert all(te._compiled_call_impl is not None for te in model.text_encoders)  # trained: compiled too
    assert not any(k.startswith("_orig_mod") for k in model.base.unet.state_dict())


def test_unknown_dynamo_backend_is_a_clear_error_before_loading(tmp_path):
    from library.errors import UserError

    args = namespace_from(dict(pretrained_model_name_or_path=str(tmp_path / "missing.safetensors"),
                               train_data_dir=str(tmp_path), resolution=64, torch_compile=True, dynamo_backend="warpdrive"))
    with pytest.raises(UserError, match="--dynamo_backend warpdrive: .*known: .*inductor"):
        load_for_training(args, "train_network")


def test_adamw_steps_with_the_fused_kernel_unless_asked_otherwise():
    params = [torch.nn.Parameter(torch.randn(4, 4))]
    assert build_optimizer("AdamW", params, 1e-3).optimizer.param_groups[0]["fused"] is True
    info = build_optimizer("AdamW", params, 1e-3, ["foreach=False"])
    assert not info.optimizer.param_groups[0]["fused"] and info.optimizer.param_groups[0]["foreach"] is False
    assert "fused" not in build_optimizer("AdamW", params, 1e-3).description  # speed only: not in ss_optimizer


@pytest.mark.parametrize("unit,warned", [("amx_bf16", False), (None, True)])
def test_bf16_on_a_cpu_without_bf16_units_warns(unit, warned, monkeypatch):
    monkeypatch.setattr(speed, "cpu_bf16_unit", lambda: unit)
    text = speed.cpu_precision_warning("bf16", "cpu")
    assert bool(text) is warned
    if warned:
        assert "--mixed_precision no" in text and "avx512_bf16" in text
    assert speed.cpu_precision_warning("bf16", "cuda") is None and speed.cpu_precision_warning("no", "cpu") is None


def test_this_machines_bf16_unit_is_detected_from_cpuinfo():
    with open("/proc/cpuinfo") as f:
        flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), [])
    speed.cpu_bf16_unit.cache_clear()
    expected = "amx_bf16" if "amx_bf16" in flags else "avx512_bf16" if "avx512_bf16" in flags else None
    assert speed.cpu_bf16_unit() == expected


_FAULTS_AFTER_TRAINING = """
import json, resource, runpy, sys, torch
argv = json.loads(sys.argv[2])
if sys.argv[1] == "script":  # the CLI's own process: ``python train_network.py ...``
    sys.argv = ["train_network.py", *argv]
    try:
        runpy.run_path("train_network.py", run_name="__main__")
    except SystemExit as exit:
        assert exit.code in (0, None), exit.code
else:  # a host training in its own process (the ComfyUI node, tests)
    from library.train.entry import main
    assert main(argv, "train_network") in (0, None)
def step():  # blocks of 4-48 MiB, all alive at the step's peak, then freed, as a training step does
    alive = [torch.ones(mib << 18) for mib in (4, 8, 16, 48) * 3]
    return sum(float(t[-1]) for t in alive)
for _ in range(6):  # the heap settles
    step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(5):
    step()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def test_the_training_scripts_own_process_keeps_freed_memory_and_a_host_keeps_its_allocator(tiny_ckpt, demo_data, tmp_path):
    """``python train_network.py`` on a CPU (library/train/own_process.py): a step's freed memory is reused by the next
    step instead of being given back to the kernel and faulted in again page by page (bench/cpu_allocator.py: 0.90x
    the step's CPU time); a host process that calls the trainer keeps glibc's defaults."""
    import json
    import subprocess
    import sys

    from tests.faults.harness import child_env, cli_args

    faults = {}
    for who in ("script", "host"):
        argv = cli_args(tiny_ckpt("sd1"), demo_data, tmp_path / who, max_train_steps="2")
        out = subprocess.run([sys.executable, "-c", _FAULTS_AFTER_TRAINING, who, json.dumps(argv)], cwd=ROOT,
                             env=child_env(), capture_output=True, text=True, timeout=600)
        assert out.returncode == 0, out.stderr[-3000:]
        assert (tmp_path / who / "t.safetensors").exists()
        faults[who] = int(out.stdout.split()[-1])
    # glibc's default unmaps blocks above 32 MiB on free: each step faults its 48 MiB blocks in again (>= 12288
    # pages a step); the script's process keeps them: almost no faults
    assert faults["host"] > 5 * 12288, faults
    assert faults["script"] < faults["host"] / 5, faults
