"""Checkpoint names, resumable training state, pruning — all written so a crash loses nothing.

A LoRA file is written to ``.tmp`` and renamed into place (networks.lora_file). A state is a
folder written whole under ``<dir>.tmp`` and then swapped in, so the folder under the final
name is always complete: either the previous state or the new one.

State folder contents (no pickled code anywhere: tensors as safetensors, optimizer and
scheduler state through ``torch.save`` and read back with ``weights_only=True``):
``network.safetensors`` (fp32 LoRA weights), ``optimizer.pt``, ``scheduler.pt``,
``train_state.json`` (epoch, global step, the run fingerprint, loss history).
"""

from __future__ import annotations

import json
import os
import re
import shutil

import torch
from safetensors.torch import load_file

from library.errors import UserError
from networks.lora_file import atomic_save_safetensors

STATE_FILES = ("network.safetensors", "optimizer.pt", "scheduler.pt", "train_state.json")


class CheckpointError(UserError):
    """A state or checkpoint that cannot be written or used."""


def epoch_name(output_name: str, epoch: int) -> str:
    return f"{output_name}-{epoch:06d}"


def step_name(output_name: str, step: int) -> str:
    return f"{output_name}-step{step:08d}"


def state_dir_name(stem: str) -> str:
    return f"{stem}-state"


def _write_json(path: str, data: dict) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=1, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())


def _torch_save(obj, path: str) -> None:
    with open(path, "wb") as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())


def save_state(path: str, network_sd: dict, optimizer, scheduler, train_state: dict) -> None:
    """Write a complete state folder at ``path``, replacing any previous one only once complete."""
    path = os.path.normpath(path)
    tmp, old = path + ".tmp", path + ".old"
    for leftover in (tmp, old):
        if os.path.exists(leftover):
            shutil.rmtree(leftover)
    os.makedirs(tmp)
    try:
        atomic_save_safetensors({k: v.detach().float().cpu() for k, v in network_sd.items()}, os.path.join(tmp, STATE_FILES[0]))
        _torch_save(optimizer.state_dict(), os.path.join(tmp, STATE_FILES[1]))
        _torch_save(scheduler.state_dict(), os.path.join(tmp, STATE_FILES[2]))
        _write_json(os.path.join(tmp, STATE_FILES[3]), train_state)
        if os.path.exists(path):
            os.replace(path, old)
        os.replace(tmp, path)
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if os.path.exists(old) and not os.path.exists(path):
            os.replace(old, path)
        raise CheckpointError(f"could not write training state {path}: {e.strerror or e}; the previous state is intact") from None
    if os.path.exists(old):
        shutil.rmtree(old, ignore_errors=True)


def read_train_state(path: str) -> dict:
    """``train_state.json`` of a state folder, with clear errors for folders that are not states."""
    if not os.path.isdir(path):
        raise CheckpointError(f"--resume {path}: folder not found; give a '*-state' folder written with --save_state")
    missing = [f for f in STATE_FILES if not os.path.isfile(os.path.join(path, f))]
    if missing:
        raise CheckpointError(f"--resume {path}: not a complete training state (missing {', '.join(missing)})")
    try:
        with open(os.path.join(path, STATE_FILES[3]), encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        raise CheckpointError(f"--resume {path}: train_state.json is unreadable ({e})") from None


def check_fingerprint(path: str, saved: dict, current: dict) -> None:
    """Refuse to resume a state made with settings that change what is trained."""
    diffs = [k for k in sorted(set(saved) | set(current)) if saved.get(k) != current.get(k)]
    if diffs:
        detail = "; ".join(f"{k}: state {saved.get(k)!r} vs now {current.get(k)!r}" for k in diffs[:4])
        raise CheckpointError(f"--resume {path}: this state belongs to another run ({detail}); resume with the same settings")


def load_state(path: str, network, optimizer, scheduler) -> dict:
    """Restore weights, optimizer and scheduler from a state folder; return its train_state."""
    train_state = read_train_state(path)
    try:
        weights = load_file(os.path.join(path, STATE_FILES[0]))
        opt_sd = torch.load(os.path.join(path, STATE_FILES[1]), map_location="cpu", weights_only=True)
        sched_sd = torch.load(os.path.join(path, STATE_FILES[2]), map_location="cpu", weights_only=True)
    except Exception as e:  # damaged files: name them, never guess
        raise CheckpointError(f"--resume {path}: state files are damaged ({str(e).splitlines()[0]})") from None
    network.load_weights(weights)
    optimizer.load_state_dict(opt_sd)
    scheduler.load_state_dict(sched_sd)
    return train_state


def prune(folder: str, output_name: str, kind: str, keep: int, state: bool = False) -> list[str]:
    """Delete all but the newest ``keep`` epoch (kind='epoch') or step (kind='step') files/states."""
    if not keep or keep <= 0 or not os.path.isdir(folder):
        return []
    esc = re.escape(output_name)
    number = r"(\d{6})" if kind == "epoch" else r"step(\d{8})"
    suffix = r"-state" if state else r"\.safetensors"
    pattern = re.compile(rf"^{esc}-{number}{suffix}$")
    found = sorted((int(m.group(1)), name) for name in os.listdir(folder) if (m := pattern.match(name)))
    removed = []
    for _, name in found[:-keep]:
        target = os.path.join(folder, name)
        shutil.rmtree(target) if state else os.remove(target)
        removed.append(target)
    return removed
