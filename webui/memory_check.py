"""The memory check: a 2-step dry run of the form's options that measures what the estimate only guesses.

Why: the estimate (library/train/memory_estimate.py) is a sum of rough constants; the only reliable answer to
"does it fit?" is to run it. The check queues the same training command with the form's options (same
script, processes and GPU ids) for ``DRY_RUN_STEPS`` steps into a fresh temporary folder under the GUI's state
folder (``memory-checks/run-*``: never the user's output_dir, never a folder that exists), with everything
that would write elsewhere or take long switched off (samples, saves, states, loggers, disk caches,
validation). The trainer reports its peak memory in status.json at the end (library/train/peak_memory.py);
when the job ends the runner calls ``settle``, which writes ``memory-checks/check-<job>.json`` (estimate vs
measured, ratio) and deletes the temporary folder. On CUDA the figure is ``torch.cuda.max_memory_allocated``
(and reserved); without a GPU it is the process's peak resident set minus its size before the model loaded.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from pathlib import Path

from library.errors import UserError
from library.options.definitions import BY_NAME
from library.train.run_folder import read_status, write_json_atomic

DRY_RUN_STEPS = 2
KIND = "memory_check"
FOLDER = "memory-checks"
RUN_PREFIX = "run-"
# Whole schema groups the dry run leaves out: where and when it saves, uploads or resumes ("saving"), sample
# images ("sampling"), loggers and metadata ("logging"); an option added to one of them later is left out too.
DROPPED_GROUPS = ("saving", "sampling", "logging")
# and single options of other groups that would make the check long, validate, skip steps or write elsewhere
DROPPED_OPTIONS = (
    "max_train_epochs", "validation_split", "validate_every_n_steps", "validate_every_n_epochs", "max_validation_steps",
    "initial_epoch", "initial_step", "skip_until_initial_step", "cache_latents_to_disk",
    "cache_text_encoder_outputs_to_disk", "debug_dataset", "output_config", "config_file",
)


def dropped(name: str) -> bool:
    """Whether the dry run leaves the option ``name`` out (the schema's group decides, see DROPPED_GROUPS)."""
    option = BY_NAME.get(name)
    return name in DROPPED_OPTIONS or (option is not None and option.group in DROPPED_GROUPS)


def dry_run_values(values: dict, folder: str) -> dict:
    """The form's options for a dry run of DRY_RUN_STEPS steps writing only into ``folder``."""
    out = {k: v for k, v in values.items() if not dropped(k)}
    out.update(max_train_steps=DRY_RUN_STEPS, output_dir=folder, output_name="memory-check")
    return out


def check_folder(state_dir: Path) -> Path:
    folder = Path(state_dir) / FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def result_path(state_dir: Path, job_id: int) -> Path:
    return Path(state_dir) / FOLDER / f"check-{int(job_id)}.json"


def new_run_folder(state_dir: Path) -> Path:
    """A folder that did not exist before (mkdtemp): the dry run can overwrite nothing."""
    return Path(tempfile.mkdtemp(prefix=RUN_PREFIX, dir=check_folder(state_dir)))


def is_temporary(state_dir: Path, folder: str | Path | None) -> bool:
    """Only folders this module made are ever deleted."""
    if not folder:
        return False
    folder = Path(folder).resolve()
    return folder.parent == (Path(state_dir) / FOLDER).resolve() and folder.name.startswith(RUN_PREFIX)


def start_record(state_dir: Path, job_id: int, estimate: dict | None, estimate_error: str | None) -> dict:
    record = {"job": job_id, "state": "queued", "steps": DRY_RUN_STEPS, "estimate": estimate,
              "estimate_error": estimate_error, "measured": None, "comparison": None, "error": None,
              "created_at": time.time()}
    write_json_atomic(str(result_path(state_dir, job_id)), record)
    return record


def read_record(state_dir: Path, job_id: int) -> dict | None:
    try:
        return json.loads(result_path(state_dir, job_id).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def compare(estimate: dict | None, measured: dict | None) -> dict | None:
    """Measured vs estimated bytes of what both count: the estimate without its CUDA-context allowance (the
    allocator's and the resident set's figures hold tensors, not the context) against the allocator's peak
    (CUDA) or the resident set's growth from before the model loaded (CPU)."""
    if not estimate or not measured:
        return None
    estimated = estimate["total_bytes"] - estimate["parts"].get("CUDA context", 0)
    if measured.get("device") == "cuda":
        value, what = measured.get("max_allocated_bytes"), "torch.cuda.max_memory_allocated"
    elif measured.get("start_rss_bytes") is not None and measured.get("peak_rss_bytes") is not None:
        value, what = measured["peak_rss_bytes"] - measured["start_rss_bytes"], "peak resident set - resident set at start"
    else:
        return None
    if not value or estimated <= 0:
        return None
    return {"estimated_bytes": int(estimated), "measured_bytes": int(value), "measured": what,
            "ratio": round(value / estimated, 3)}


def settle(state_dir: Path, job: dict) -> None:
    """Runner hook when a job ends: for a memory check, record what the trainer measured, then delete its folder."""
    if job.get("kind") != KIND:
        return
    record = read_record(state_dir, job["id"]) or start_record(state_dir, job["id"], None, None)
    status = read_status(job["run_dir"]) if job.get("run_dir") else {}
    measured = status.get("memory") if status.get("phase") == "done" else None
    record.update(state=job["status"], measured=measured, comparison=compare(record.get("estimate"), measured),
                  error=None if measured else (job.get("error") or status.get("error") or f"the dry run ended {job['status']}"),
                  ended_at=time.time())
    write_json_atomic(str(result_path(state_dir, job["id"])), record)
    if is_temporary(state_dir, job.get("run_dir")):
        shutil.rmtree(job["run_dir"], ignore_errors=True)


def queue(ctx, state_dir: Path, values: dict, script: str, processes: int, gpu_ids: str | None) -> dict:
    """Queue a dry run of the form's options (first in the queue); its record, with the estimate when there is one."""
    from library.train.memory_estimate import estimate as estimate_memory

    from . import forms

    if processes < 1:
        raise UserError("processes must be at least 1")
    folder = new_run_folder(state_dir)
    try:
        _, resolved = forms.check(dry_run_values(forms.clean(values), str(folder)), script, ctx.roots)
    except UserError as e:
        shutil.rmtree(folder, ignore_errors=True)
        e.field = forms.field_of(str(e), values)
        raise
    except Exception:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    try:
        est, est_error = estimate_memory(resolved), None
    except UserError as e:  # a diffusers folder or .ckpt: measured all the same, nothing to compare with
        est, est_error = None, str(e)
    job_id = ctx.store.add(KIND, "memory check", script, resolved, str(folder), processes, gpu_ids)
    ctx.store.reorder([job_id])  # before queued runs: it is short and answers a question asked now
    return start_record(state_dir, job_id, est, est_error)
