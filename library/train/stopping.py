"""Stopping a run cleanly: Ctrl-C, SIGTERM (docker stop, Slurm, ``timeout``) and stop requests.

Why: a run that is told to stop should leave what Ctrl-C leaves: a resumable state and a LoRA,
saved at the next step boundary, then exit 130 (SIGINT) or 143 (SIGTERM). A second signal while that
save is running must not cut it (it is ignored with a note); a second signal at any other time quits
at once. Anything else that wants the run to stop (the GUI's stop file, the ComfyUI node) calls
``request_stop(reason)``: the same path, no signal needed. The final message only names files that
were checked to be complete (``lora_intact``/``state_intact``).
"""

from __future__ import annotations

import contextlib
import math
import signal
import sys

EXIT_INTERRUPTED, EXIT_TERMINATED = 130, 143
_SIGNALS = (("SIGINT", "Ctrl-C"), ("SIGTERM", "SIGTERM"))


class StopNow(KeyboardInterrupt):
    """A second signal outside a save: quit at once, without saving."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class StopFlag:
    """Callable -> True once a stop was requested; the loop reads it at step boundaries."""

    def __init__(self):
        self.count = 0
        self.reason = None  # "Ctrl-C", "SIGTERM", or what request_stop was given
        self.saving = False
        self.previous: dict = {}

    def __call__(self) -> bool:
        return self.count > 0

    @property
    def exit_code(self) -> int:
        return EXIT_TERMINATED if self.reason == "SIGTERM" else EXIT_INTERRUPTED

    def request_stop(self, reason: str) -> None:
        """Ask the run to save a resumable state and a LoRA at the next step boundary, then stop."""
        self.count += 1
        if self.count == 1:
            self.reason = reason
            print(f"\n{reason}: finishing this step, then saving a resumable state and a LoRA "
                  "(send it again to quit without saving)", file=sys.stderr, flush=True)

    def _handler(self, signum, frame):
        name = "SIGTERM" if signum == signal.SIGTERM else "Ctrl-C"
        if self.saving:  # cutting the save short would only lose it: finish it
            print(f"\n{name}: still saving the state and the LoRA; they will be complete in a moment",
                  file=sys.stderr, flush=True)
            return
        if self.count == 0:
            self.request_stop(name)
            return
        self.count += 1
        raise StopNow(name)

    def install(self) -> "StopFlag":
        for name, _ in _SIGNALS:
            signum = getattr(signal, name)
            try:
                self.previous[signum] = signal.signal(signum, self._handler)
            except ValueError:  # not the main thread (e.g. inside ComfyUI): signals are the host's business
                pass
        return self

    def restore(self) -> None:
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)
        self.previous = {}


@contextlib.contextmanager
def saving(flag):
    """While the stop save runs, further signals are noted but do not cut it."""
    if not isinstance(flag, StopFlag):
        yield
        return
    flag.saving = True
    try:
        yield
    finally:
        flag.saving = False


@contextlib.contextmanager
def sigterm_before_training():
    """Until a StopFlag takes over (and after it hands back), SIGTERM ends the run at once, as a second
    Ctrl-C does: there is nothing to save before step 0, and a silent death would leave no word of
    why (``docker stop`` during model load). Main thread only; elsewhere signals are the host's."""
    def handler(signum, frame):
        raise StopNow("SIGTERM")

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def reason_of(flag) -> str:
    return flag.reason if isinstance(flag, StopFlag) and flag.reason else "Ctrl-C"


def lora_intact(path: str) -> bool:
    """The file reads back whole and every weight is finite."""
    if not path:
        return False
    try:
        from safetensors.torch import load_file

        tensors = load_file(path)
    except Exception:  # noqa: BLE001 - any failure to read means: do not call it intact
        return False
    return bool(tensors) and all(math.isfinite(float(t.float().abs().sum())) for t in tensors.values())


def state_intact(path: str) -> bool:
    from library.train.checkpoints import is_complete_state

    return bool(path) and is_complete_state(path)


def exit_code_for(reason: str) -> int:
    return EXIT_TERMINATED if reason == "SIGTERM" else EXIT_INTERRUPTED


def stopped_message(reason: str, lora: str, state_dir: str) -> str:
    """What a stopped run tells the user, naming only files checked to be complete."""
    saved_lora, saved_state = lora_intact(lora), state_intact(state_dir)
    if saved_lora and saved_state:
        return f"interrupted ({reason}): saved {lora} and the state {state_dir}; continue with --resume {state_dir}"
    parts = [f"saved {lora}" if saved_lora else "the LoRA could not be saved",
             f"the state {state_dir} is complete (continue with --resume {state_dir})" if saved_state
             else "no resumable state was saved"]
    return f"interrupted ({reason}): " + "; ".join(parts)
