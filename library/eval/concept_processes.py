"""Train the concept LoRA under ``accelerate launch`` with several CPU processes (gloo), as a user's
``accelerate launch --multi_gpu --num_processes 2 train_network.py ...`` does.

Why its own path: data sharding, gradient all-reduce and "which rank saves" only exist across
processes; the in-process entry point (library/eval/concept_run.py) never runs them.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

from library.eval.concept_run import train_argv

REPO = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch_command(script: str, argv: list[str], processes: int) -> list[str]:
    """``accelerate launch`` for ``processes`` CPU processes running ``script``.py with ``argv``."""
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--num_machines", "1", "--mixed_precision", "no",
              "--dynamo_backend", "no", "--main_process_port", str(_free_port())]
    launch += ["--multi_gpu", "--num_processes", str(processes)] if processes > 1 else ["--num_processes", "1"]
    return launch + [str(REPO / f"{script}.py"), *argv]


def train_concept_lora_processes(base: str, root: Path, out: Path, processes: int = 2, name: str = "sks",
                                 script: str = "train_network", timeout: float = 3600, **options) -> Path:
    """Train the concept LoRA with ``processes`` ranks (each ``train_batch_size`` images a step, so pass the
    single-process batch divided by ``processes`` for the same global batch); returns the saved LoRA."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
           "TRANSFORMERS_OFFLINE": "1"}
    cmd = launch_command(script, train_argv(base, root, out, name, **options), processes)
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"accelerate launch exited with {proc.returncode}:\n{proc.stderr[-3000:]}")
    lora = out / f"{name}.safetensors"
    if not lora.is_file():
        raise RuntimeError(f"training wrote no {lora}")
    return lora
