"""Two CPU processes (gloo) under ``accelerate launch``: same LoRA on both ranks, twice the global batch."""

import json
import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from tests.train.conftest import REPO


def _launch(tmp_path, ckpt, data, processes, extra=()):
    out = tmp_path / f"p{processes}"
    out.mkdir()
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--num_machines", "1", "--mixed_precision", "no",
              "--dynamo_backend", "no", "--main_process_port", str(29500 + os.getpid() % 1000)]
    launch += ["--multi_gpu", "--num_processes", str(processes)] if processes > 1 else ["--num_processes", "1"]
    cmd = launch + [str(REPO / "tests" / "train" / "ddp_worker.py"), str(out),
                    "--pretrained_model_name_or_path", ckpt, "--train_data_dir", str(data / "img"),
                    "--resolution", "64", "--caption_extension", ".txt", "--network_dim", "4", "--train_batch_size", "2",
                    "--max_train_epochs", "1", "--learning_rate", "1e-3", "--seed", "3", "--max_data_loader_n_workers", "0",
                    "--output_dir", str(out), "--output_name", "mp", "--network_dropout", "0.1",
                    "--ddp_timeout", "5"] + list(extra)  # ddp_timeout: kohya's process-group timeout, via accelerate
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


def test_two_processes_keep_identical_weights_and_halve_the_steps(tiny_ckpt, demo_data, tmp_path):
    if not torch.distributed.is_available() or not torch.distributed.is_gloo_available():
        pytest.skip("this torch build has no gloo backend")
    out = _launch(tmp_path, tiny_ckpt("sd1"), demo_data, 2)
    info = [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [i["world"] for i in info] == [2, 2]
    # 8 images x 10 repeats / batch 2 = 40 batches; 2 processes take 2 batches per step -> 20 steps
    assert [i["steps"] for i in info] == [20, 20]
    w0, w1 = load_file(out / "rank0.safetensors"), load_file(out / "rank1.safetensors")
    assert w0.keys() == w1.keys()
    assert all(torch.equal(w0[k], w1[k]) for k in w0)
    assert any(k.endswith("lora_up.weight") and w0[k].abs().sum() > 0 for k in w0)  # it trained
    saved = load_file(out / "mp.safetensors")
    assert all(torch.equal(saved[k].float(), w0[k]) for k in saved)
