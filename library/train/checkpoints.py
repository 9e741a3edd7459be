"""Checkpoint names and resumable training state — all written so a crash loses nothing.

Every file goes through library.atomic (``.tmp``, fsync, rename into place). A state is a
folder written whole under ``<dir>.tmp`` and then swapped in, so the folder under the final
name is always complete: either the previous state or the new one.

State folder contents (no pickled code anywhere: tensors as safetensors, optimizer and
scheduler state through ``torch.save`` and read back with ``weights_only=True``):
``network.safetensors`` (fp32 LoRA weights), ``optimizer.pt``, ``scheduler.pt``,
``train_state.json`` (epoch, global step, the run's settings and id, loss history) — written last, so a
folder holding a readable ``train_state.json`` is complete. ``epoch_finished`` says whether all of the
epoch's batches were done (resume then starts the next epoch); states written before that field existed
are read by ``epoch_finished``'s older rule.

What a kill (SIGKILL, power loss) can leave, and how it is read back: ``<dir>.tmp`` (a state being
written; ignored, or finished into place if complete and ``<dir>`` is gone), ``<dir>.old`` (the
previous state during the swap; put back if ``<dir>`` is gone), ``<dir>.deleting`` (a pruned state
half deleted; ignored and removed by the next prune, library/train/ownership.py). ``latest_state`` picks the newest complete
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


class CheckpointError(UserError):
    """A state or checkpoint that cannot be written or used."""


# kohya's names when --output_name is unset (train_util.DEFAULT_EPOCH_NAME, DEFAULT_STEP_NAME, DEFAULT_LAST_OUTPUT_NAME)
DEFAULT_EPOCH_NAME, DEFAULT_STEP_NAME, DEFAULT_LAST_NAME = "epoch", "at", "last"


def epoch_name(output_name: str | None, epoch: int) -> str:
    return f"{output_name or DEFAULT_EPOCH_NAME}-{epoch:06d}"


def step_name(output_name: str | None, step: int) -> str:
    return f"{output_name or DEFAULT_STEP_NAME}-step{step:08d}"


def last_name(output_name: str | None) -> str:
    return output_name or DEFAULT_LAST_NAME


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
        raise CheckpointError(state_write_failure(path, e)) from None
    if os.path.exists(old):
        shutil.rmtree(old, ignore_errors=True)


def state_write_failure(path: str, e: OSError) -> str:
    """The message for a state that could not be written: the file, the disk, and what is left to resume."""
    reason = e.strerror or str(e)
    what = f"the disk is full ({reason})" if e.errno in DISK_FULL else reason
    where = f" on {atomic.disk_of(path)}" if e.errno in DISK_FULL else ""
    failed = e.filename if isinstance(e.filename, str) else path
    previous = latest_state(os.path.dirname(path) or ".")
    if previous:
        after = f"the previous state {previous} is intact: continue with --resume {previous}"
    else:
        after = "no earlier state exists, so a new run starts from the beginning (LoRA files already saved are intact)"
    return (f"could not write training state {path} ({failed}): {what}{where}; free space or choose another "
            f"--output_dir; {after}")


def _state_pattern(output_name: str | None, defaults: bool = False):
    if defaults and not output_name:  # kohya's default names: epoch-NNNNNN-state, at-stepNNNNNNNN-state, last-state
        return re.compile(rf"^({DEFAULT_EPOCH_NAME}-\d{{6}}|{DEFAULT_STEP_NAME}-step\d{{8}}|{DEFAULT_LAST_NAME})-state$")
    name = re.escape(output_name) if output_name else r".+?"
    return re.compile(rf"^{name}(-\d{{6}}|-step\d{{8}})?-state$")


def _state_script(path: str):
    try:
        with open(os.path.join(path, STATE_FILES[3]), encoding="utf-8") as f:
            data = json.load(f)
        return data.get("script") if isinstance(data, dict) else None
    except (OSError, ValueError):
        return None


def latest_state(folder: str, output_name: str | None = None, defaults: bool = False, script: str | None = None) -> str | None:
    """The newest complete state folder in ``folder`` (highest global step, then newest), or None.

    Only ``<output_name>[-NNNNNN|-stepNNNNNNNN]-state`` folders count (any output name when None, or
    kohya's default names with ``defaults``), and with ``script`` only states of that trainer (SD vs SDXL);
    incomplete ones and leftovers of a kill are skipped, and an interrupted swap is finished first.
    """
    if not os.path.isdir(folder):
        return None
    pattern = _state_pattern(output_name, defaults)
    for name in os.listdir(folder):
        for suffix in (".tmp", ".old"):
            if name.endswith(suffix) and pattern.match(name[: -len(suffix)]):
                _recover_swap(os.path.join(folder, name[: -len(suffix)]))
    best = None
    for name in os.listdir(folder):
        path = os.path.join(folder, name)
        if not pattern.match(name) or not os.path.isdir(path) or not is_complete_state(path):
            continue
        if script and _state_script(path) not in (None, script):
            continue
        with open(os.path.join(path, STATE_FILES[3]), encoding="utf-8") as f:
            key = (json.load(f)["global_step"], os.path.getmtime(os.path.join(path, STATE_FILES[3])))
        if best is None or key > best[0]:
            best = (key, path)
    return best[1] if best else None


def resolve_resume(path: str, output_name: str | None = None, script: str | None = None) -> str:
    """``--resume`` accepts a state folder, or an output folder: then its newest complete state of this
    output_name (kohya's default names when unset) and this trainer."""
    looks_like_state = path.rstrip("/\\").endswith("-state") or any(
        os.path.exists(os.path.join(path, f)) for f in STATE_FILES)
    if looks_like_state or not os.path.isdir(path):
        return path
    found = latest_state(path, output_name, defaults=True, script=script)
    if found is None:
        whose = f" of output_name {output_name}" if output_name else " with kohya's default names (no --output_name)"
        whose += f" written by {script}" if script else ""
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
            state = json.load(f)
    except (OSError, ValueError) as e:
        raise CheckpointError(f"--resume {path}: train_state.json is unreadable ({e})") from None
    problem = _train_state_problem(state)
    if problem:
        raise CheckpointError(f"--resume {path}: train_state.json is damaged or not lorasmith's ({problem}); "
                              "resume from another state")
    return state


# field -> (accepted types, required); bool is an int in Python, so it is refused where a number is expected
_STATE_FIELDS = {"global_step": (int, True), "epoch": (int, True), "position": (int, True), "losses": (list, False),
                 "checkpoints": (list, False), "fingerprint": (dict, False), "run_id": (str, False),
                 "scaler": ((dict, type(None)), False), "max_train_steps": (int, False), "script": (str, False),
                 "validation": (list, False), "epoch_finished": (bool, False)}


def epoch_finished(state: dict, batches_per_epoch: int) -> bool:
    """Whether the state was saved after its epoch's last batch, so a resume starts the next epoch.

    ``epoch_finished`` is written with every state; older states only marked it by a ``position`` at (or
    past) the epoch's batch count, which is only right while the dataset and batch size stay the same."""
    if "epoch_finished" in state:
        return state["epoch_finished"]
    return state["position"] >= batches_per_epoch


def _train_state_problem(state) -> str | None:
    """What is wrong with a parsed train_state.json, in a few words, or None."""
    if not isinstance(state, dict):
        return f"a JSON {type(state).__name__} where an object was expected"
    for key, (types, required) in _STATE_FIELDS.items():
        if key not in state:
            if required:
                return f"'{key}' is missing"
            continue
        value = state[key]
        if not isinstance(value, types) or (isinstance(value, bool) and types is not bool):
            return f"'{key}' is {type(value).__name__} {str(value)[:40]!r}"
        if isinstance(value, int) and value < 0:
            return f"'{key}' is negative"
    if any(not isinstance(v, (int, float)) or isinstance(v, bool) for v in state.get("losses", [])):
        return "'losses' holds something that is not a number"
    for c in state.get("checkpoints", []):
        if not isinstance(c, dict) or not isinstance(c.get("file"), str) or not isinstance(c.get("step", 0), int):
            return "'checkpoints' holds an entry without a file name and step"
    return None


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
