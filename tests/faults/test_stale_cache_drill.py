"""Latents cached on disk with one model or dtype are never used with another, and a damaged cache
file is rebuilt (docs/reliability.md)."""

import json
import logging
import re

import numpy as np

from library.train.entry import EXIT_OK, main
from tests.faults.harness import cli_args


def test_disk_latent_cache_is_rebuilt_for_another_model_dtype_or_a_damaged_file(tiny_ckpt, demo_data, tmp_path, caplog):
    folder = demo_data / "img" / "10_sks shape"
    caplog.set_level(logging.INFO, logger="lorasmith")

    def run(model_seed=0, **extra):
        caplog.clear()
        argv = cli_args(tiny_ckpt("sd1", model_seed), demo_data, tmp_path / "out", max_train_steps=1, lr_warmup_steps=0,
                        cache_latents_to_disk=True, flip_aug=False, **extra)
        assert main(argv) == EXIT_OK
        found = [re.search(r"latents: (\d+) encoded, (\d+) reused", r.getMessage()) for r in caplog.records]
        encoded, reused = next(map(int, m.groups()) for m in found if m)
        return encoded, reused

    def stored_keys():
        return {p.name: json.loads(str(np.load(p)["lorasmith_key"])) for p in sorted(folder.glob("*_sd.npz"))}

    assert run() == (8, 0)
    first = stored_keys()
    assert len(first) == 8
    assert run() == (0, 8)  # same model and dtype: reused

    assert run(model_seed=1) == (8, 0)  # another model (same architecture, other weights): rebuilt
    assert all(k["model"] != first[n]["model"] for n, k in stored_keys().items())

    assert run(model_seed=1, mixed_precision="bf16") == (8, 0)  # another VAE dtype: rebuilt
    assert {k["vae_dtype"] for k in stored_keys().values()} == {"torch.bfloat16"}

    damaged = sorted(folder.glob("*_sd.npz"))[3]
    damaged.write_bytes(damaged.read_bytes()[:100])
    assert run(model_seed=1, mixed_precision="bf16") == (1, 7)
    assert any(str(damaged) in r.getMessage() and "rebuilding" in r.getMessage() for r in caplog.records)
    np.load(damaged)["latents"]  # whole again
