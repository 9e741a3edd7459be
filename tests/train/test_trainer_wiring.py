"""Training wiring: the Trainer is assembled from parts built before it (library/train/run_parts.py), so
constructing it reads and writes no file; the base file's sha256 for the metadata is read once per run."""

import builtins
import os

from safetensors import safe_open

from library.models import hashes
from library.options import namespace_from
from library.train import loop
from library.train.entry import train
from tests.train.conftest import base_values


def test_the_trainer_is_built_without_file_io_and_the_base_is_hashed_once(tiny_ckpt, demo_data, tmp_path, monkeypatch):
    monkeypatch.setenv("LORASMITH_CACHE_DIR", str(tmp_path / "cache"))  # no remembered hash: it is computed
    hashed = []
    real_sha256 = hashes.sha256_file
    monkeypatch.setattr(hashes, "sha256_file", lambda p: hashed.append(str(p)) or real_sha256(p))
    touched = []
    real_init, real_open, real_makedirs = loop.Trainer.__init__, builtins.open, os.makedirs

    def watched_init(self, *args, **kwargs):
        with monkeypatch.context() as m:
            m.setattr(builtins, "open", lambda f, *a, **k: touched.append(("open", str(f))) or real_open(f, *a, **k))
            m.setattr(os, "makedirs", lambda p, *a, **k: touched.append(("makedirs", str(p))) or real_makedirs(p, *a, **k))
            real_init(self, *args, **kwargs)

    monkeypatch.setattr(loop.Trainer, "__init__", watched_init)
    ckpt = tiny_ckpt("sd1")
    result = train(namespace_from(base_values(ckpt, demo_data, tmp_path / "out", max_train_steps=1)))
    assert touched == []
    assert hashed == [str(ckpt)]
    with safe_open(result.lora, "pt") as f:
        assert f.metadata()["ss_new_sd_model_hash"] == real_sha256(ckpt)
