"""The way to the first step (library/train/startup.py, lean_imports.py): latents cached while the model
loads, the base file's hash off the way, diffusers' unused backends not imported — and the trained LoRA
exactly what the plain sequence gives."""

import hashlib
import logging
import os
import shutil
import subprocess
import sys
import threading

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from library.models import load_base_model
from library.models import hashes
from library.options import namespace_from
from library.train import startup
from library.train.entry import train
from tests.train.conftest import REPO, base_values

OVERLAP_NOTE = "caching latents while the UNet and text encoders load"


def _metadata(path):
    with safe_open(path, "pt") as f:
        return f.metadata()


def _same(a, b):
    a, b = load_file(a), load_file(b)
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("family", ["sd1", "sdxl"])
def test_the_loader_hands_over_the_vae_first_with_its_weights(family, tiny_ckpt):
    seen = []

    def on_part(name, module, fam):
        seen.append((name, fam, any(p.is_meta for p in module.parameters())))

    base = load_base_model(tiny_ckpt(family), on_part=on_part)
    tes = ["text encoder 1", "text encoder 2"] if family == "sdxl" else ["text encoder"]
    assert seen == [(n, family, False) for n in ["VAE", "UNet", *tes]]
    assert not any(p.is_meta for m in (base.unet, base.vae, *base.text_encoders) for p in m.parameters())


def test_a_diffusers_folder_hands_over_its_vae_first(tiny_ckpt, tmp_path):
    single = load_base_model(tiny_ckpt("sd1"))
    single.vae.save_pretrained(tmp_path / "vae")
    single.unet.save_pretrained(tmp_path / "unet")
    single.text_encoders[0].save_pretrained(tmp_path / "text_encoder")
    seen = []
    folder = load_base_model(tmp_path, on_part=lambda name, module, family: seen.append((name, module, family)))
    assert seen == [("VAE", folder.vae, "sd1")]
    assert all(torch.equal(a, b) for a, b in zip(single.vae.state_dict().values(), folder.vae.state_dict().values()))


@pytest.mark.parametrize("extra", [{}, {"vae": "other"}, {"cache_latents_to_disk": True, "flip_aug": True}],
                         ids=["memory", "vae_file", "disk_flip"])
def test_latents_cached_during_the_load_train_the_same_lora(extra, tiny_ckpt, demo_data, tmp_path, monkeypatch, caplog):
    if extra.get("vae") == "other":
        extra = {"vae": tiny_ckpt("sd1", seed=1)}  # a full checkpoint's VAE, as --vae accepts
    second = tmp_path / "data2"
    shutil.copytree(demo_data, second)  # a disk cache of the first run must not serve the second

    def run(data, out):
        return train(namespace_from(base_values(tiny_ckpt("sd1"), data, tmp_path / out, cache_latents=True,
                                                max_train_steps=3, **extra)))

    monkeypatch.setattr(startup, "OVERLAP", False)
    serial = run(demo_data, "serial")
    monkeypatch.setattr(startup, "OVERLAP", True)
    with caplog.at_level(logging.INFO, logger="lorasmith.train"):
        overlapped = run(second, "overlap")
    assert OVERLAP_NOTE in caplog.text
    assert _same(serial.lora, overlapped.lora)


def test_a_failed_load_stops_the_early_caching(tiny_ckpt, demo_data, tmp_path, monkeypatch):
    """The VAE is fine, the UNet is not: the error comes out and no caching thread is left running."""
    from library.models import errors, single_file

    real = single_file._assign

    def broken_unet(path, family, part, model, got, declared):
        if part.name == "UNet":
            raise errors.ModelLoadError(f"{path}: UNet broken for the test")
        return real(path, family, part, model, got, declared)

    monkeypatch.setattr(single_file, "_assign", broken_unet)
    with pytest.raises(Exception, match="UNet broken for the test"):
        train(namespace_from(base_values(tiny_ckpt("sd1"), demo_data, tmp_path / "o", cache_latents=True)))
    assert not any(t.name == "latent-cache" and t.is_alive() for t in threading.enumerate())


def test_the_base_hash_is_awaited_at_the_first_save_not_before_the_first_step(tiny_ckpt, demo_data, tmp_path, monkeypatch):
    monkeypatch.setenv("LORASMITH_CACHE_DIR", str(tmp_path / "cache"))  # the hash is not known yet
    stepped, waited_out = threading.Event(), []
    real = hashes.sha256_file

    def hash_after_the_first_step(path):
        waited_out.append(not stepped.wait(120))  # the trainer must reach step 1 while this runs
        return real(path)

    monkeypatch.setattr(hashes, "sha256_file", hash_after_the_first_step)
    args = namespace_from(base_values(tiny_ckpt("sd1"), demo_data, tmp_path / "o", max_train_steps=2))
    result = train(args, progress_callback=lambda step, total, loss: stepped.set())
    assert waited_out == [False]
    expected = hashlib.sha256(open(args.pretrained_model_name_or_path, "rb").read()).hexdigest()
    assert _metadata(result.lora)["ss_new_sd_model_hash"] == expected


def test_a_base_hash_that_fails_leaves_its_key_empty_and_the_lora_written(tiny_ckpt, demo_data, tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("LORASMITH_CACHE_DIR", str(tmp_path / "cache"))

    def gone(path):
        raise FileNotFoundError(2, "No such file or directory", str(path))

    monkeypatch.setattr(hashes, "sha256_file", gone)
    with caplog.at_level(logging.WARNING, logger="lorasmith.train"):
        result = train(namespace_from(base_values(tiny_ckpt("sd1"), demo_data, tmp_path / "o", max_train_steps=1)))
    md = _metadata(result.lora)
    assert md["ss_new_sd_model_hash"] == "" and md["ss_sd_model_hash"]
    assert "ss_new_sd_model_hash left empty: the base file could not be hashed" in caplog.text


def test_the_training_script_leaves_diffusers_unused_backends_out_and_trains_the_same(tiny_ckpt, demo_data, tmp_path):
    values = base_values(tiny_ckpt("sd1"), demo_data, tmp_path / "script", cache_latents=True, max_train_steps=2)
    argv = []
    for k, v in values.items():
        argv += [f"--{k}"] if v is True else [f"--{k}", str(v)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # as this process (tests/conftest.py): the same GEMM rounding
    out = subprocess.run([sys.executable, "-X", "importtime", str(REPO / "train_network.py"), *argv], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    imported = {line.split("|")[-1].strip() for line in out.stderr.splitlines() if line.startswith("import time:")}
    assert "diffusers" in imported and not imported & {"bitsandbytes", "peft"}
    assert OVERLAP_NOTE in out.stderr
    in_process = train(namespace_from({**values, "output_dir": str(tmp_path / "in_process")}))
    assert _same(tmp_path / "script" / "t.safetensors", in_process.lora)
