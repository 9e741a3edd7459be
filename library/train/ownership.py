"""Which files belong to this run: run identity, the output lock, pruning our own files only.

Why: an output folder is shared ground. A second run into the same ``output_dir``/``output_name``
used to prune the first run's checkpoints, two runs at once overwrote each other, and ``--resume
OUTPUT_DIR`` could pick another run's state. Now:

- every run has an id (a new one, or the resumed state's): it is written into each state's
  ``train_state.json`` (``run_id``) and each LoRA's metadata (``lorasmith_run_id``; not an ``ss_`` key,
  so kohya's fields and the ``sshs_*`` hashes are unchanged);
- pruning deletes a file or state only when it carries this run's id;
- one process at a time trains into ``output_dir``/``output_name``: ``RunLock`` holds an OS lock on
  ``.<name>.lock`` (released by the OS when the process dies, so a killed run's lock is recovered)
  and records the holder's pid, host and start time for the message the next run shows.
"""

from __future__ import annotations

import datetime
import json
import os
import re
import shutil
import socket
import uuid

from safetensors import safe_open

from library import atomic
from library.errors import UserError
from library.train import checkpoints as ck

RUN_ID_KEY = "lorasmith_run_id"
_DELETING = ".deleting"

try:
    import fcntl
except ImportError:  # Windows: fall back to an exclusive create plus a pid check
    fcntl = None


class OutputLocked(UserError):
    """Another live process trains into the same output_dir/output_name."""


def new_run_id() -> str:
    return uuid.uuid4().hex


def lock_path(output_dir: str, name: str) -> str:
    return os.path.join(output_dir, f".{name}.lock")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


class RunLock:
    """An exclusive lock on ``output_dir``/``name`` for the life of one run (main process only)."""

    def __init__(self, output_dir: str, name: str):
        self.path = lock_path(output_dir, name)
        self.name = name
        self.fd = None
        self.made_folder = False  # the lock made output_dir: an empty one goes again on release

    def _holder(self) -> dict:
        try:
            with open(self.path, encoding="utf-8") as f:
                data = json.load(f)
            return data if isinstance(data, dict) else {}
        except (OSError, ValueError):
            return {}

    def _refuse(self) -> None:
        h = self._holder()
        who = (f"pid {h.get('pid', '?')} on {h.get('host', '?')}, started {h.get('started', '?')}" if h
               else "another process")
        raise OutputLocked(
            f"output_dir {os.path.dirname(self.path) or '.'} with output_name {self.name} is in use by another training "
            f"run ({who}); wait for it to finish, stop it, or choose another --output_name / --output_dir "
            f"(if that process is gone, delete {self.path})")

    def acquire(self) -> "RunLock":
        folder = os.path.dirname(self.path) or "."
        self.made_folder = not os.path.isdir(folder)
        os.makedirs(folder, exist_ok=True)
        info = json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                           "started": datetime.datetime.now().astimezone().isoformat(timespec="seconds")})
        if fcntl is not None:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, atomic.umask_mode())
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                self._refuse()
            os.ftruncate(fd, 0)
            os.write(fd, info.encode())
            self.fd = fd
            return self
        while True:  # no flock: exclusive create; a lock of a dead local process is stale
            try:
                self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL, atomic.umask_mode())
                os.write(self.fd, info.encode())
                return self
            except FileExistsError:
                h = self._holder()
                if h.get("host") == socket.gethostname() and isinstance(h.get("pid"), int) and not _pid_alive(h["pid"]):
                    os.remove(self.path)
                    continue
                self._refuse()

    def release(self) -> None:
        if self.fd is None:
            return
        try:
            os.remove(self.path)  # while still holding it: nobody can take a lock on the removed file meanwhile
        except OSError:
            pass
        os.close(self.fd)
        self.fd = None
        if self.made_folder:  # a run refused before it wrote anything leaves no folder behind
            try:
                os.rmdir(os.path.dirname(self.path) or ".")
            except OSError:
                pass  # not empty: the run's files stay


# --- the run id in files ----------------------------------------------------------------------------

def lora_run_id(path: str):
    """The run id in a LoRA file's metadata, or None (another tool's file, an older file, unreadable)."""
    try:
        with safe_open(path, framework="pt") as f:
            return (f.metadata() or {}).get(RUN_ID_KEY)
    except Exception:  # noqa: BLE001 - an unreadable file is simply not ours
        return None


def state_run_id(path: str):
    try:
        with open(os.path.join(path, ck.STATE_FILES[3]), encoding="utf-8") as f:
            data = json.load(f)
        return data.get("run_id") if isinstance(data, dict) else None
    except (OSError, ValueError):
        return None


# --- pruning (kohya's rules, on our own files only) ---------------------------------------------------

def _numbered(folder: str, stem_pattern: str, suffix: str) -> list[tuple[int, str]]:
    pattern = re.compile(rf"^{stem_pattern}{re.escape(suffix)}$")
    return sorted((int(m.group(1)), n) for n in os.listdir(folder) if (m := pattern.match(n)))


def prune_own(folder: str, output_name, kind: str, below: int, run_id: str, state: bool = False) -> list[str]:
    """Delete this run's epoch/step files (or states) numbered below ``below``; others' are never touched.

    kohya's rules give ``below``: steps ``current - save_last_n_steps`` (files of the last N *steps*
    stay), epochs ``current - save_every_n_epochs * save_last_n_epochs + 1``.
    """
    if not os.path.isdir(folder):
        return []
    if state:  # half-deleted states a kill left behind
        for name in os.listdir(folder):
            if name.endswith("-state" + _DELETING):
                shutil.rmtree(os.path.join(folder, name), ignore_errors=True)
    stem = ck.epoch_name(output_name, 0) if kind == "epoch" else ck.step_name(output_name, 0)
    number = r"(\d{6})" if kind == "epoch" else r"(\d{8})"
    stem_pattern = re.escape(stem[: -6 if kind == "epoch" else -8]) + number
    removed = []
    for no, name in _numbered(folder, stem_pattern, "-state" if state else ".safetensors"):
        target = os.path.join(folder, name)
        if no >= below or (state_run_id(target) if state else lora_run_id(target)) != run_id:
            continue
        if state:  # renamed first, so a kill mid-delete never leaves a half state under a state's name
            atomic.replace(target, target + _DELETING)
            shutil.rmtree(target + _DELETING)
        else:
            os.remove(target)
        removed.append(target)
    return removed
