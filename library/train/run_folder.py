"""The run folder: what a training process tells anything that watches it, and how it is told what to do.

Why files: the GUI, the ComfyUI node and plain scripts watch a run without importing the trainer or
talking to its process. The trainer (main process only) writes into ``--output_dir``:

- ``status.json``  phase, step, total, epoch, it/s, ETA, last error; replaced atomically, at most
  every ``interval`` seconds (phase changes at once), so a reader never sees half a file;
- ``metrics.jsonl`` one JSON line per optimizer step: step, epoch, loss, ``lr/<group>`` and any other
  scalar a caller records (``record_scalars``: validation loss, max-norm, ...). After a resume a step
  may appear twice: the later line wins;
- ``samples.jsonl`` one line per sample image: step, prompt, file (relative to the run folder);
- ``item_losses.jsonl`` one line per optimizer step: step and ``[[image key (its path), loss], ...]`` (each
  image's loss before the batch mean, from every micro-batch of the step and, with several processes,
  gathered from all of them; finite values only; an image repeated in a batch appears twice), so outlier
  images can be found.

At the end status.json gets ``memory``: the process's peak (CUDA allocator figures, or the resident set
without a GPU; library/train/peak_memory.py), which the GUI's memory check compares with its estimate.

Control files (created by the GUI or by hand, e.g. ``touch output/save-now``) are read between steps
and deleted when acted on: ``save-now`` (a LoRA + resumable state now), ``sample-now`` (sample images
now), ``stop`` (the Ctrl-C path: a resumable state and a LoRA, then exit code 130).
Formats are documented in docs/gui.md.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from contextlib import contextmanager

from library import atomic

logger = logging.getLogger("lorasmith.train")

STATUS_FILE, METRICS_FILE, SAMPLES_FILE = "status.json", "metrics.jsonl", "samples.jsonl"
ITEM_LOSSES_FILE = "item_losses.jsonl"
CONTROL_FILES = ("save-now", "sample-now", "stop")
FINAL_PHASES = ("done", "interrupted", "failed")


def write_json_atomic(path: str, data: dict) -> None:
    """``data`` as JSON at ``path``, through the one atomic writer (readers never see half a file)."""
    atomic.write_text(path, json.dumps(data, indent=1, sort_keys=True))


def read_status(folder: str) -> dict:
    """The folder's status.json, or {} when there is none (yet) or it cannot be read."""
    try:
        with open(os.path.join(folder, STATUS_FILE), encoding="utf-8") as f:
            data = json.load(f)
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _scalar(value):
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


class RunFolder:
    """Writer of the run folder's files for one process; every method is a no-op when ``enabled`` is False
    (processes other than the main one)."""

    def __init__(self, folder: str, enabled: bool = True, interval: float = 1.0, clock=time.monotonic):
        self.folder, self.enabled, self.interval, self.clock = folder, enabled, interval, clock
        self.state: dict = {}
        self._written_at = None
        self._rate_from = None  # (clock, step) of the first step of this process: it/s over the session
        self._warned = False
        self._validation_seen = 0
        self._items: list = []  # this step's [key, loss] pairs, until flush_items (every process buffers)
        self._items_step = None
        self._start_rss = None
        if enabled:
            self._guarded(os.makedirs, folder, 0o777, True)
            self.state = read_status(folder)

    # --- status.json ------------------------------------------------------------------------
    def update(self, force: bool = False, **fields) -> None:
        """Merge ``fields`` into the status; write it now if forced, the phase changed or ``interval`` passed."""
        if not self.enabled:
            return
        phase_changed = "phase" in fields and fields["phase"] != self.state.get("phase")
        self.state.update(fields)
        now = self.clock()
        if force or phase_changed or self._written_at is None or now - self._written_at >= self.interval:
            self.state["updated_at"] = time.time()
            self.state["pid"] = os.getpid()
            self._guarded(write_json_atomic, os.path.join(self.folder, STATUS_FILE), self.state)
            self._written_at = now

    def _guarded(self, write, *args) -> None:
        """These files are for watchers: a full disk or a read-only folder must never stop or mask the run."""
        try:
            write(*args)
        except OSError as e:
            if not self._warned:
                logger.warning("could not write the run folder's status/metrics files in %s: %s", self.folder, e)
                self._warned = True

    def starting(self, argv=None) -> None:
        from library.train.peak_memory import resident_bytes

        self._start_rss = resident_bytes()  # before the model loads: the libraries' share of the peak
        self.update(force=True, phase="starting", error=None, exit_code=None, started_at=time.time(),
                    **({"argv": list(argv)} if argv is not None else {}))

    def training(self, step: int, total: int, epoch: int, epochs: int) -> None:
        self._rate_from = None
        self.update(force=True, phase="training", step=step, total=total, epoch=epoch, epochs=epochs, it_s=None, eta_s=None)

    def finish(self, phase: str, error: str | None = None, exit_code: int | None = None) -> None:
        if not self.enabled:
            return
        from library.train.peak_memory import peak_memory

        # the trainer's own writer may have moved the step on since this one last wrote
        self.state = {**self.state, **read_status(self.folder)}
        self.update(force=True, phase=phase, error=error, exit_code=exit_code, eta_s=0 if phase == "done" else None,
                    memory=peak_memory(self._start_rss))

    # --- metrics.jsonl / samples.jsonl --------------------------------------------------------
    def _append(self, name: str, record: dict) -> None:
        def write():
            with open(os.path.join(self.folder, name), "a", encoding="utf-8") as f:
                f.write(json.dumps(record, sort_keys=True) + "\n")

        self._guarded(write)

    def record_step(self, step: int, total: int, epoch: int, loss: float, lrs: dict, extra: dict | None = None) -> None:
        """One metrics line, and the status's step, it/s and ETA (throttled)."""
        if not self.enabled:
            return
        scalars = {k: _scalar(v) for k, v in {**lrs, **(extra or {})}.items()}
        self._append(METRICS_FILE, {"step": step, "epoch": epoch, "loss": _scalar(loss), "time": round(time.time(), 3),
                                    **{k: v for k, v in scalars.items() if v is not None}})
        now = self.clock()
        if self._rate_from is None:
            self._rate_from = (now, step)
            its = None
        else:
            t0, s0 = self._rate_from
            its = (step - s0) / (now - t0) if now > t0 and step > s0 else None
        eta = (total - step) / its if its else None
        self.update(step=step, total=total, epoch=epoch, loss=_scalar(loss), it_s=its, eta_s=eta)

    def record_scalars(self, step: int, scalars: dict) -> None:
        """Extra scalars for a step (e.g. validation loss) as their own metrics line."""
        if self.enabled:
            values = {k: _scalar(v) for k, v in scalars.items()}
            self._append(METRICS_FILE, {"step": step, "time": round(time.time(), 3),
                                        **{k: v for k, v in values.items() if v is not None}})

    def record_validation(self, history: list) -> None:
        """Validation losses (library/train/validation.py's history) not yet in metrics.jsonl, as
        ``loss/validation/<kind>_average`` lines at their step."""
        for entry in history[self._validation_seen:]:
            self.record_scalars(entry["step"], {f"loss/validation/{entry['kind']}_average": entry["loss"]})
        self._validation_seen = len(history)

    def record_items(self, step: int, keys, losses: list) -> None:
        """Buffer each image's loss of one micro-batch (``losses``: the B-value tensors batch_loss handed out), by
        image key; ``flush_items`` writes the step's line. Every process buffers (its share is gathered)."""
        if not keys or not losses:
            return
        values = [float(v) for t in losses for v in t.detach().float().cpu().reshape(-1).tolist()]
        self._items += [[str(k), round(v, 6)] for k, v in zip(keys, values) if math.isfinite(v)]
        self._items_step = step

    def flush_items(self, accelerator=None) -> None:
        """One ``item_losses.jsonl`` line for the optimizer step about to be taken: the buffered images of every
        micro-batch and, with several processes, of every process (one gather per step; every process must call
        this at the same point)."""
        items, self._items = self._items, []
        step = self._items_step
        if accelerator is not None and accelerator.num_processes > 1:
            from accelerate.utils import gather_object

            gathered = gather_object([(step, items)])  # one entry per process, in rank order
            step = next((s for s, _ in gathered if s is not None), step)
            items = [item for _, share in gathered for item in share]
        if self.enabled and items and step is not None:
            self._append(ITEM_LOSSES_FILE, {"step": step, "items": items})

    def record_samples(self, step: int, prompts: list[str], paths: list[str]) -> None:
        if not self.enabled:
            return
        for prompt, path in zip(prompts, paths):
            rel = os.path.relpath(os.path.abspath(path), os.path.abspath(self.folder))
            self._append(SAMPLES_FILE, {"step": step, "prompt": prompt, "file": rel.replace(os.sep, "/")})

    # --- control files --------------------------------------------------------------------------
    def take_controls(self) -> set[str]:
        """The control files present now, deleted as they are taken (each request acts once)."""
        found = set()
        if not self.enabled:
            return found
        for name in CONTROL_FILES:
            path = os.path.join(self.folder, name)
            if os.path.exists(path):
                try:
                    os.unlink(path)
                except OSError:  # gone already, or not ours to delete: act only on a request we could take
                    continue
                found.add(name)
        return found


def poll_controls(run_folder: RunFolder, accelerator, interrupted: bool = False) -> set[str]:
    """Control requests agreed by every process: the main one reads the files, the others follow. A process's
    own stop request (Ctrl-C, SIGTERM, a host's Cancel) travels in the same all-reduce as ``"interrupt"``, so a
    step boundary costs one collective, not two."""
    found = run_folder.take_controls() if accelerator.is_main_process else set()
    if interrupted:
        found.add("interrupt")
    if accelerator.num_processes <= 1:
        return found
    import torch

    names = (*CONTROL_FILES, "interrupt")
    flags = torch.tensor([float(n in found) for n in names], device=accelerator.device)
    flags = accelerator.reduce(flags, "max")
    return {n for n, v in zip(names, flags.tolist()) if v > 0}


def _failure(exc: BaseException) -> tuple[str, str | None]:
    """(phase, one-line error) for an exception leaving a run; the CLI prints its own, longer, message."""
    from library.errors import UserError

    name = type(exc).__name__
    if name == "Interrupted" or isinstance(exc, KeyboardInterrupt):
        return "interrupted", None
    if isinstance(exc, UserError):
        return "failed", str(exc).splitlines()[0] if str(exc) else name
    if name == "OutOfMemoryError":
        return "failed", "out of GPU memory (docs/troubleshooting.md)"
    return "failed", f"{name}: {str(exc).splitlines()[0] if str(exc) else ''}".rstrip(": ")


@contextmanager
def run_status(args, argv=None):
    """status.json around a whole run: 'starting', then 'done' / 'interrupted' / 'failed' with the error.

    Input refused before training starts (a UserError while still 'starting') leaves the folder as it was
    found: no status.json and no new folder, as every refusal promises (docs/reliability.md). Watchers
    such as the GUI then take the process's one ``error:`` line instead."""
    folder = getattr(args, "output_dir", None)
    is_main = int(os.environ.get("RANK", "0")) == 0
    existed = bool(folder) and os.path.isdir(folder)
    had_status = existed and os.path.exists(os.path.join(folder, STATUS_FILE))
    rf = RunFolder(folder, enabled=bool(folder) and is_main)
    rf.starting(argv)
    try:
        yield rf
    except BaseException as e:
        from library.errors import UserError

        if rf.enabled and isinstance(e, UserError) and read_status(folder).get("phase") == "starting":
            _leave_as_found(folder, existed, had_status)
        else:
            phase, error = _failure(e)
            rf.finish(phase, error)
        raise
    rf.finish("done")


def _leave_as_found(folder: str, existed: bool, had_status: bool) -> None:
    """Undo what ``run_status`` wrote for a run refused before it started (never anything else)."""
    try:
        if not had_status:
            os.unlink(os.path.join(folder, STATUS_FILE))
        if not existed:
            os.rmdir(folder)  # only if still empty: a file the run wrote meanwhile keeps the folder
    except OSError:
        pass
