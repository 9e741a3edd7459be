"""A Python that has imported torch/diffusers once and forks one training run at a time.

Why: the kill drill starts a dozen runs; each ``python train_network.py`` pays several seconds of
imports on a busy 2-core box. A child forked from here runs the real script (``runpy``, as
``__main__``, same argv) in its own process, so SIGKILL/SIGINT end it exactly as they would end
``python train_network.py`` — only the imports are shared.

Protocol, one JSON object per line: stdin ``{"argv": [...], "script": "train_network.py", "log": PATH,
"faults": {...}}``; stdout ``{"pid": N}`` once the child runs, then ``{"pid": N, "status": S}`` (exit
code, or minus the signal number).

``faults`` is test instrumentation, installed in the child only (nothing in the product reads it):
``{"kill_at": [EVENT, n]}`` makes the child SIGKILL itself at the n-th EVENT, in the middle of
what the event names; ``{"fsize": BYTES}`` caps every file the child writes (RLIMIT_FSIZE, with
SIGXFSZ ignored so write() fails with EFBIG, as on a full disk); ``{"signal_at": [[EVENT, n, "SIGTERM"], ...]}``
makes the child send itself that signal at the n-th EVENT and carry on. Events:
``safetensors_write`` (half a .safetensors written), ``torch_save`` (half an optimizer/scheduler
file), ``json_write`` (half a train_state.json), ``replace`` (before a rename into place),
``replaced`` (just after one), ``rmtree`` (a folder half deleted), ``step`` (inside a micro-batch),
``load`` (as the models start loading, before training).
Writes and renames are reached through library.atomic's public fault hook (the one writer);
``shutil.rmtree``, ``loop.batch_loss`` and ``setup_model.load_for_training`` are public names.
"""

import json
import os
import runpy
import signal
import sys
import traceback
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))


def _warm_imports() -> None:
    import diffusers  # noqa: F401
    import torch  # noqa: F401
    import transformers  # noqa: F401

    import library.train.entry  # noqa: F401
    import library.train.loop  # noqa: F401
    import library.train.outputs  # noqa: F401
    import library.train.setup_data  # noqa: F401
    import library.train.setup_model  # noqa: F401
    from library.options import parse_args  # noqa: F401


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def _install_faults(faults: dict) -> None:
    if "fsize" in faults:
        import resource

        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (faults["fsize"], faults["fsize"]))
    if "kill_at" not in faults and "signal_at" not in faults:
        return
    event, nth = faults.get("kill_at") or (None, 0)
    seen = {"n": 0}
    signals = [[e, n, getattr(signal, name), 0] for e, n, name in faults.get("signal_at", [])]

    def due(name: str) -> bool:
        for entry in signals:  # signal_at: send ourselves a signal at the n-th event, then go on
            if entry[0] == name:
                entry[3] += 1
                if entry[3] == entry[1]:
                    os.kill(os.getpid(), entry[2])
        if name != event:
            return False
        seen["n"] += 1
        return seen["n"] == nth

    def truncate_half(path) -> None:
        with open(path, "r+b") as f:
            f.truncate(max(1, os.path.getsize(path) // 2))

    import shutil

    import library.train.loop as loop
    import library.train.setup_model as setup_model
    from library import atomic

    real_rmtree, real_loss, real_load = shutil.rmtree, loop.batch_loss, setup_model.load_for_training
    written_events = {".safetensors": "safetensors_write", ".pt": "torch_save", ".json": "json_write"}

    def hook(event, src, dst):  # library.atomic's public fault hook: every write and rename passes here
        if event == "written":
            if due(written_events.get(os.path.splitext(dst)[1], "")):
                truncate_half(src)
                _die()
        elif due(event):  # "replace" (before a rename), "replaced" (just after)
            _die()

    def rmtree(path, *a, **kw):
        if due("rmtree") and os.path.isdir(path):
            files = sorted(os.listdir(path))
            if files:
                os.remove(os.path.join(path, files[0]))
            _die()
        real_rmtree(path, *a, **kw)

    def batch_loss(*a, **kw):
        if due("step"):
            _die()
        return real_loss(*a, **kw)

    def load_for_training(*a, **kw):
        if due("load"):
            _die()
        return real_load(*a, **kw)

    atomic.set_fault_hook(hook)
    shutil.rmtree, loop.batch_loss, setup_model.load_for_training = rmtree, batch_loss, load_for_training


def _child(job: dict) -> int:
    fd = os.open(job["log"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    _install_faults(job.get("faults") or {})
    script = str(REPO / job.get("script", "train_network.py"))
    sys.argv = [script, *job["argv"]]
    try:
        runpy.run_path(script, run_name="__main__")
        return 0
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except BaseException:  # noqa: BLE001 - report, as a plain python run would
        traceback.print_exc()
        return 1


def main() -> None:
    protocol = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # import-time chatter goes to stderr, never into the protocol
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C on the test run stops the test, not this server
    _warm_imports()
    protocol.write(json.dumps({"ready": True}) + "\n")
    for line in sys.stdin:
        job = json.loads(line)
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                code = _child(job)
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        protocol.write(json.dumps({"pid": pid}) + "\n")
        _, status = os.waitpid(pid, 0)
        code = -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
        protocol.write(json.dumps({"pid": pid, "status": code}) + "\n")


if __name__ == "__main__":
    main()
