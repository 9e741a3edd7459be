"""The Compare page's logic: a finished run's checkpoints, grid requests and results, the chosen
checkpoint, and the settings diff between two runs. Torch-free: images are made by a job
(``webui/compare_grid.py``), never in the GUI process.

A grid lives in ``RUN/compare/grid-N/``: ``request.json`` (checkpoints, strengths, prompts, seed, ...)
written when it is queued, ``grid.jsonl`` one line per image as the job makes it
(checkpoint, strength, prompt, file). The chosen checkpoint is recorded in ``RUN/best.json`` and,
when asked, copied to ``RUN/best/`` under a name that is free (never over an existing file).
"""

from __future__ import annotations

import json
import re
import shutil
import time
from pathlib import Path

from library.errors import UserError
from library.inference.prompts import LIMITS, parse_prompt_line

from .runs import read_jsonl

GRIDS, REQUEST, RESULTS, BEST = "compare", "request.json", "grid.jsonl", "best.json"
STRENGTH_RANGE = (-4.0, 4.0)
MAX_IMAGES = 400
_STEP = re.compile(r"-step(\d{8})$")
_EPOCH = re.compile(r"-(\d{6})$")


def checkpoints(run_dir: Path) -> list[dict]:
    """The LoRA files of a run folder in training order: epoch/step saves, then the final file."""
    out = []
    for path in sorted(Path(run_dir).glob("*.safetensors")):
        stem = path.stem
        step, epoch = _STEP.search(stem), _EPOCH.search(stem)
        if step:
            out.append({"file": path.name, "label": f"step {int(step.group(1))}", "order": (0, int(step.group(1)))})
        elif epoch:
            out.append({"file": path.name, "label": f"epoch {int(epoch.group(1))}", "order": (1, int(epoch.group(1)))})
        else:
            out.append({"file": path.name, "label": "final", "order": (2, 0)})
    out.sort(key=lambda c: (c["order"], c["file"]))
    return [{k: v for k, v in c.items() if k != "order"} for c in out]


def default_prompts(run_dir: Path, options: dict) -> list[str]:
    """The run's own sample prompt lines (its --sample_prompts .txt file), else the prompts it sampled."""
    path = options.get("sample_prompts")
    if path and str(path).endswith(".txt") and Path(path).is_file():
        lines = [line.strip() for line in Path(path).read_text(encoding="utf-8").splitlines()]
        lines = [line for line in lines if line and not line.startswith("#")]
        if lines:
            return lines
    rows, _ = read_jsonl(Path(run_dir) / "samples.jsonl")
    return list(dict.fromkeys(r["prompt"] for r in rows if r.get("prompt")))


def check_request(run_dir: Path, files: list[str], strengths: list[float], prompts: list[str], steps: int,
                  width: int | None, height: int | None) -> None:
    """Refuse a grid the job could not make, before it is queued (names the field and what to give)."""
    known = {c["file"] for c in checkpoints(run_dir)}
    if not files:
        raise UserError("checkpoints: pick at least one LoRA file of the run")
    for f in files:
        if f not in known:
            raise UserError(f"checkpoints: {f} is not a LoRA file of this run; pick from {', '.join(sorted(known)) or 'none'}")
    if not strengths:
        raise UserError("strengths: give at least one LoRA strength, e.g. 0.5 1.0")
    low, high = STRENGTH_RANGE
    for s in strengths:
        if not low <= s <= high:
            raise UserError(f"strengths: {s:g} is outside {low:g}..{high:g}; kohya LoRAs are used at 0..1, sometimes up to 1.5")
    prompts = [p for p in prompts if p.strip()]
    if not prompts:
        raise UserError("prompts: give at least one prompt (one a line; kohya's --w/--h/--s/--d options work)")
    for i, p in enumerate(prompts):
        parse_prompt_line(p, f"prompt {i + 1}")  # raises the prompt file's own UserError
    if not LIMITS["steps"][0] <= steps <= LIMITS["steps"][1]:
        raise UserError(f"steps: {steps} must be between {LIMITS['steps'][0]} and {LIMITS['steps'][1]}")
    for name, v in (("width", width), ("height", height)):
        if v is not None and (v < 8 or v % 8 or v > LIMITS[name][1]):
            raise UserError(f"{name}: {v} must be a multiple of 8 up to {LIMITS[name][1]} (or empty for the prompt's own)")
    count = len(files) * len(strengths) * len(prompts)
    if count > MAX_IMAGES:
        raise UserError(f"the grid would be {count} images (over {MAX_IMAGES}); pick fewer checkpoints, strengths or prompts")


def new_grid_folder(run_dir: Path) -> Path:
    """RUN/compare/grid-N with the next free N (grids are never overwritten)."""
    base = Path(run_dir) / GRIDS
    base.mkdir(exist_ok=True)
    n = 1 + max((int(p.name.split("-")[1]) for p in base.glob("grid-*") if p.name.split("-")[1].isdigit()), default=0)
    folder = base / f"grid-{n}"
    folder.mkdir()
    return folder


def write_request(folder: Path, request: dict) -> None:
    from library import atomic

    atomic.write_text(str(folder / REQUEST), json.dumps(request, indent=1))


def grids(run_dir: Path) -> list[dict]:
    """Every grid of a run, newest first: its request and the images made so far (paths relative to the run)."""
    out = []
    base = Path(run_dir) / GRIDS
    for folder in sorted(base.glob("grid-*"), key=lambda p: -int(p.name.split("-")[1]) if p.name.split("-")[1].isdigit() else 0):
        try:
            request = json.loads((folder / REQUEST).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        rows, _ = read_jsonl(folder / RESULTS)
        images = [dict(r, file=f"{GRIDS}/{folder.name}/{r['file']}") for r in rows if (folder / r.get("file", "")).is_file()]
        out.append({"name": folder.name, "request": request, "images": images})
    return out


def read_best(run_dir: Path) -> dict | None:
    try:
        return json.loads((Path(run_dir) / BEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def choose_best(run_dir: Path, file: str, copy: bool = False, note: str = "") -> dict:
    """Record ``file`` as the run's chosen checkpoint; with ``copy`` also copy it to RUN/best/ (a free name)."""
    from library import atomic

    run_dir = Path(run_dir)
    if file not in {c["file"] for c in checkpoints(run_dir)}:
        raise UserError(f"{file} is not a LoRA file of this run")
    record = {"file": file, "chosen_at": time.time(), "note": note, "copy": None}
    if copy:
        target = run_dir / "best" / file
        n = 1
        while target.exists():  # an earlier pick stays as it is
            n += 1
            target = run_dir / "best" / f"{Path(file).stem}-{n}.safetensors"
        target.parent.mkdir(exist_ok=True)
        with atomic.atomic_path(str(target)) as tmp:
            shutil.copyfile(run_dir / file, tmp)
        record["copy"] = target.relative_to(run_dir).as_posix()
    atomic.write_text(str(run_dir / BEST), json.dumps(record, indent=1))
    return record


def run_settings(job: dict) -> dict:
    """What a run trained with: its LoRA's ss_* settings (defaults included), overlaid with the job's own options."""
    from .lora_settings import read_metadata, settings_from_metadata

    values: dict = {}
    files = checkpoints(Path(job["run_dir"])) if job.get("run_dir") and Path(job["run_dir"]).is_dir() else []
    if files:
        try:
            values.update(settings_from_metadata(read_metadata(str(Path(job["run_dir"]) / files[-1]["file"])))["values"])
        except Exception:  # a damaged or foreign file: the job's options still say most
            pass
    if isinstance(job.get("options"), dict):
        values.update(job["options"])
    return values


def _same(a, b) -> bool:
    norm = lambda v: json.dumps(v, sort_keys=True, default=str) if isinstance(v, (list, tuple, dict)) else str(v)  # noqa: E731
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        return float(a) == float(b)
    return norm(a) == norm(b)


def settings_diff(a: dict, b: dict, skip: tuple[str, ...] = ("resume", "output_dir")) -> list[dict]:
    """[{name, a, b}] for every setting that differs between two runs (None: not set in that run)."""
    names = sorted((set(a) | set(b)) - set(skip))
    return [{"name": n, "a": a.get(n), "b": b.get(n)} for n in names if not _same(a.get(n), b.get(n))]
