"""Helpers for the fault drills: the fork-server client, run options, and the on-disk invariants."""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import time
from pathlib import Path

import torch
from safetensors import safe_open

from library.train.checkpoints import STATE_FILES

REPO = Path(__file__).resolve().parents[2]
LEFTOVER_SUFFIXES = (".tmp", ".old", ".deleting")  # what a kill may leave; never read as results


def child_env(**extra) -> dict:
    """One intra-op thread (same numerics in every process; no spin-waits on a busy box), offline."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
           "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    env.update(extra)
    return env


def cli_args(ckpt, data, out, **extra) -> list[str]:
    """Command-line options for a short deterministic CPU run (kohya names)."""
    values = {
        "pretrained_model_name_or_path": str(ckpt), "train_data_dir": str(Path(data) / "img"), "resolution": "64",
        "caption_extension": ".txt", "network_dim": "4", "network_alpha": "4", "learning_rate": "1e-3",
        "max_train_steps": "24", "train_batch_size": "1", "seed": "5", "output_dir": str(out), "output_name": "t",
        "max_data_loader_n_workers": "0", "optimizer_type": "AdamW", "lr_scheduler": "cosine", "lr_warmup_steps": "2",
        "network_dropout": "0.1", "noise_offset": "0.05", "flip_aug": True, "shuffle_caption": True,
    }
    values.update(extra)
    argv = []
    for key, value in values.items():
        if value is False or value is None:
            continue
        argv.append(f"--{key}")
        if value is not True:
            argv += [str(v) for v in value] if isinstance(value, (list, tuple)) else [str(value)]
    return argv


class ForkServer:
    """Client of tests/faults/forkserver.py: ``start`` a run (returns its pid), ``wait`` for its status."""

    def __init__(self, log_dir: Path):
        self.log_dir = Path(log_dir)
        self.server_log = self.log_dir / "server.log"
        with open(self.server_log, "w") as err:
            self.proc = subprocess.Popen(
                [sys.executable, str(REPO / "tests" / "faults" / "forkserver.py")], cwd=REPO, env=child_env(),
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err, text=True, bufsize=1,
            )
        self.runs = 0
        assert self._read(timeout=180).get("ready")

    def _read(self, timeout: float) -> dict:
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        if not ready:
            raise TimeoutError("the fork server did not answer")
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the fork server exited ({self.proc.wait()}): {self.server_log.read_text()[-3000:]}")
        return json.loads(line)

    def start(self, argv, script="train_network.py", faults=None) -> tuple[int, Path]:
        self.runs += 1
        log = self.log_dir / f"run{self.runs:02d}.log"
        job = {"argv": [str(a) for a in argv], "script": script, "log": str(log), "faults": faults or {}}
        self.proc.stdin.write(json.dumps(job) + "\n")
        self.proc.stdin.flush()
        return self._read(timeout=60)["pid"], log

    def wait(self, timeout: float = 300) -> int:
        return self._read(timeout)["status"]

    def run(self, argv, script="train_network.py", faults=None) -> tuple[int, str]:
        """(status, log text) of one run to its end."""
        _, log = self.start(argv, script, faults)
        status = self.wait()
        return status, log.read_text(errors="replace")

    def close(self) -> None:
        self.proc.stdin.close()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def wait_for(predicate, timeout: float, interval: float = 0.01) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(interval)
    return False


def snapshot(folder: Path) -> dict:
    """{relative path: (size, mtime_ns)} of everything under ``folder``."""
    out = {}
    for root, dirs, files in os.walk(folder):
        for name in files + dirs:
            p = os.path.join(root, name)
            try:
                st = os.stat(p)
            except FileNotFoundError:
                continue
            out[os.path.relpath(p, folder)] = (st.st_size, st.st_mtime_ns)
    return out


def safetensors_keys(path) -> set[str]:
    with safe_open(str(path), framework="pt") as f:
        keys = set(f.keys())
        for k in keys:
            f.get_tensor(k)  # every byte of every tensor is there
    return keys


def check_no_partial_files(out: Path, lora_keys: set[str]) -> list[str]:
    """Assert every file/folder under a final name in ``out`` is whole; return the leftovers seen."""
    leftovers = []
    for name in sorted(os.listdir(out)):
        path = out / name
        if name.endswith(LEFTOVER_SUFFIXES):
            leftovers.append(name)
        elif name.endswith(".safetensors"):
            assert safetensors_keys(path) == lora_keys, f"{name} is incomplete"
        elif name.endswith("-state"):
            missing = [f for f in STATE_FILES if not (path / f).is_file()]
            assert not missing, f"state {name} lacks {missing}"
            assert safetensors_keys(path / STATE_FILES[0]) == lora_keys, f"{name}/network.safetensors is incomplete"
            for f in STATE_FILES[1:3]:
                torch.load(path / f, map_location="cpu", weights_only=True)
            assert isinstance(json.loads((path / STATE_FILES[3]).read_text())["global_step"], int)
        elif name.endswith(".png"):
            from PIL import Image

            with Image.open(path) as im:
                im.load()
        elif name.endswith(".html"):
            assert (path).read_text().rstrip().endswith("</table>"), f"{name} is incomplete"
    return leftovers
