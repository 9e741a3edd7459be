"""Checkpoint names, resumable training state, pruning — all written so a crash loses nothing.

Every file goes through library.atomic (``.tmp``, fsync, rename into place). A state is a
folder written whole under ``<dir>.tmp`` and then swapped in, so the folder under the final
name is always complete: either the previous state or the new one.

State folder contents (no pickled code anywhere: tensors as safetensors, optimizer and
scheduler state through ``torch.save`` and read back with ``weights_only=True``):
``network.safetensors`` (fp32 LoRA weights), ``optimizer.pt``, ``scheduler.pt``,
``train_state.json`` (epoch, global step, the run fingerprint, loss history) — written last, so a
folder holding a readable ``train_state.json`` is complete.

What a kill (SIGKILL, power loss) can leave, and how it is read back: ``<dir>.tmp`` (a state being
written; ignored, or finished into place if complete and ``<dir>`` is gone), ``<dir>.old`` (the
previous state during the swap; put back if ``<dir>`` is gone), ``<dir>.deleting`` (a pruned state
half deleted; ignored and removed by the next prune). ``latest_state`` picks the newest complete
state of an output folder, which is what ``--resume OUTPUT_DIR`` uses (tests/faults/test_kill_drill.py).
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil

import torch
from safetensors.torch import load_file

from library import atomic
from library.errors import UserError
from networks.lora_file import atomic_save_safetensors

STATE_FILES = ("network.safetensors", "optimizer.pt", "scheduler.pt", "train_state.json")
DISK_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
_DELETING = ".deleting"


class CheckpointError(UserError):
    """A state or checkpoint that cannot be written or used."""


def epoch_name(output_name: str, epoch: int) -> str:
    return f"{output_name}-{epoch:06d}"


def step_name(output_name: str, step: int) -> str:
    return f"{output_name}-step{step:08d}"


def state_dir_name(stem: str) -> str:
    return f"{stem}-state"


def _write_json(path: str, data: dict) -> None:
    with atomic.atomic_write(path, "w") as f:
        json.dump(data, f, indent=1, sort_keys=True)


class _Writer:
    """A file wrapper that remembers the OSError of a failed write: torch.save reports a full disk
    as a RuntimeError ("unexpected pos"), which would hide the reason."""

    def __init__(self, f):
        self.f, self.error = f, None

    def write(self, data) -> int:
        try:
            return self.f.write(data)
        except OSError as e:
            self.error = e
            raise

    def flush(self) -> None:
        self.f.flush()


def _torch_save(obj, path: str) -> None:
    with atomic.atomic_write(path, "wb") as f:
        writer = _Writer(f)
        try:
            torch.save(obj, writer)
        except RuntimeError:
            if writer.error is not None:
                raise writer.error from None
            raise


def is_complete_state(path: str) -> bool:
    """Every state file present and ``train_state.json`` (written last) readable."""
    if not all(os.path.isfile(os.path.join(path, f)) for f in STATE_FILES):
        return False
    try:
        with open(os.path.join(path, STATE_FILES[3]), encoding="utf-8") as f:
            return isinstance(json.load(f).get("global_step"), int)
    except (OSError, ValueError, AttributeError):
        return False


def _recover_swap(path: str) -> None:
    """Finish a state swap a kill interrupted: ``path`` gone but a complete ``.tmp`` or ``.old`` left."""
    if os.path.exists(path):
        return
    for leftover in (path + ".tmp", path + ".old"):  # the newer one first
        if os.path.isdir(leftover) and is_complete_state(leftover):
            atomic.replace(leftover, path)
            return


def save_state(path: str, network_sd: dict, optimizer, scheduler, train_state: dict) -> None:
    """Write a complete state folder at ``path``, replacing any previous one only once complete."""
    path = os.path.normpath(path)
    tmp, old = path + ".tmp", path + ".old"
    _recover_swap(path)  # never delete the only copy of the previous state below
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
            atomic.replace(path, old)
        atomic.replace(tmp, path)
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if os.path.exists(old) and not os.path.exists(path):
            atomic.replace(old, path)
        reason = e.strerror or str(e)
        what = f"the disk is full ({reason})" if e.errno in DISK_FULL else reason
        raise CheckpointError(f"could not write training state {path}: {what}; free space or choose "
                              "another --output_dir, then resume from the previous state with --resume "
                              f"{os.path.dirname(path) or '.'} (it is intact)") from None
    if os.path.exists(old):
        shutil.rmtree(old, ignore_errors=True)


def _state_pattern(output_name: str | None):
    name = re.escape(output_name) if output_name else r".+?"
    return re.compile(rf"^{name}(-\d{{6}}|-step\d{{8}})?-state$")


def latest_state(folder: str, output_name: str | None = None) -> str | None:
    """The newest complete state folder in ``folder`` (highest global step, then newest), or None.

    Only ``<output_name>[-NNNNNN|-stepNNNNNNNN]-state`` folders count (any output name when None);
    incomplete ones and leftovers of a kill are skipped, and an interrupted swap is finished first.
    """
    if not os.path.isdir(folder):
        return None
    pattern = _state_pattern(output_name)
    for name in os.listdir(folder):
        for suffix in (".tmp", ".old"):
            if name.endswith(suffix) and pattern.match(name[: -len(suffix)]):
                _recover_swap(os.path.join(folder, name[: -len(suffix)]))
    best = None
    for name in os.listdir(folder):
        path = os.path.join(folder, name)
        if not pattern.match(name) or not os.path.isdir(path) or not is_complete_state(path):
            continue
        with open(os.path.join(path, STATE_FILES[3]), encoding="utf-8") as f:
            key = (json.load(f)["global_step"], os.path.getmtime(os.path.join(path, STATE_FILES[3])))
        if best is None or key > best[0]:
            best = (key, path)
    return best[1] if best else None


def resolve_resume(path: str, output_name: str | None = None) -> str:
    """``--resume`` accepts a state folder, or an output folder: then its newest complete state."""
    looks_like_state = path.rstrip("/\\").endswith("-state") or any(
        os.path.exists(os.path.join(path, f)) for f in STATE_FILES)
    if looks_like_state or not os.path.isdir(path):
        return path
    found = latest_state(path, output_name)
    if found is None:
        whose = f" of output_name {output_name}" if output_name else ""
        raise CheckpointError(f"--resume {path}: no complete training state{whose} (a '*-state' folder) in this "
                              "folder; give a state folder written with --save_state, or start without --resume")
    return found


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
    names = os.listdir(folder)
    if state:  # half-deleted states a kill left behind
        for name in names:
            if name.endswith("-state" + _DELETING):
                shutil.rmtree(os.path.join(folder, name), ignore_errors=True)
    found = sorted((int(m.group(1)), name) for name in names if (m := pattern.match(name)))
    removed = []
    for _, name in found[:-keep]:
        target = os.path.join(folder, name)
        if state:  # renamed first, so a kill mid-delete never leaves a half state under a state's name
            atomic.replace(target, target + _DELETING)
            shutil.rmtree(target + _DELETING)
        else:
            os.remove(target)
        removed.append(target)
    return removed
