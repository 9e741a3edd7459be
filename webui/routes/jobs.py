"""Runs page and run page API: queue runs, control them, read their run folders (metrics, samples, files, log, SSE)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from fastapi import APIRouter, Body, Depends, HTTPException
from fastapi.responses import StreamingResponse

from library.errors import UserError
from library.train.run_folder import read_status

from .. import forms, runs
from ..context import Context, get_ctx
from ..jobs import FINAL

router = APIRouter()


@router.get("/api/jobs")
def api_jobs(ctx: Context = Depends(get_ctx)):
    return {"jobs": [ctx.job_view(j) for j in ctx.store.all()]}


@router.post("/api/jobs")
def api_create(values: dict | None = Body(None), config_path: str | None = Body(None), script: str = Body("train_network"),
               name: str | None = Body(None), processes: int = Body(1), gpu_ids: str | None = Body(None),
               ctx: Context = Depends(get_ctx)):
    """Queue a training run from form values and/or a TOML file (form values win)."""
    roots, store = ctx.roots, ctx.store
    merged = {}
    if config_path:
        merged.update(forms.load_toml(roots.resolve(config_path, must_exist=True), script))
    merged.update(forms.clean(values or {}))
    merged.setdefault("save_state_on_train_end", True)  # so the run can be resumed or extended
    if not merged.get("output_dir"):
        merged["output_dir"] = _free_folder(roots.root / "output", merged.get("output_name") or "run")
    if processes < 1:
        raise UserError("processes must be at least 1")
    try:
        _, resolved = forms.check(merged, script, roots)
    except UserError as e:
        e.field = forms.field_of(str(e), merged)
        raise
    busy = [j for j in store.with_status("queued", "running") if j["run_dir"] == resolved["output_dir"]]
    if busy:
        raise UserError(f"output_dir {merged['output_dir']} is used by job {busy[0]['id']}; pick another folder")
    job_id = store.add("train", name or merged.get("output_name") or "run", script, resolved, resolved["output_dir"],
                       processes, gpu_ids)
    return ctx.job_view(store.get(job_id))


def _free_folder(parent: Path, name: str) -> str:
    """parent/name, or parent/name-2, -3 ... when taken: every GUI run gets its own run folder."""
    candidate, n = parent / name, 1
    while candidate.exists():
        n += 1
        candidate = parent / f"{name}-{n}"
    candidate.mkdir(parents=True)  # taken now: the next run named alike gets the next number
    return str(candidate)


@router.get("/api/jobs/{job_id}")
def api_job(job_id: int, ctx: Context = Depends(get_ctx)):
    return ctx.job_view(ctx.job_or_404(job_id))


@router.post("/api/jobs/{job_id}/cancel")
def api_cancel(job_id: int, ctx: Context = Depends(get_ctx)):
    ctx.job_or_404(job_id)
    return {"result": ctx.runner.cancel(job_id)}


@router.post("/api/jobs/{job_id}/resume")
def api_resume(job_id: int, extra_steps: int = Body(0, embed=True), ctx: Context = Depends(get_ctx)):
    """A new job continuing from the newest state in the run folder (+ extra_steps: extend)."""
    from library.train.checkpoints import latest_state

    job = ctx.job_or_404(job_id)
    if job["kind"] != "train" or job["status"] not in FINAL:
        raise UserError(f"job {job_id} is {job['status']}; only a finished or stopped training can be resumed")
    if latest_state(job["run_dir"]) is None:
        raise UserError(f"{ctx.roots.relative(job['run_dir'])} holds no complete state to resume from "
                        "(train with save_state or stop the run to save one)")
    values = dict(job["options"], resume=job["run_dir"])
    if extra_steps:
        if extra_steps < 1:
            raise UserError("extra_steps must be at least 1")
        total = read_status(job["run_dir"]).get("total") or values.get("max_train_steps") or 0
        values["max_train_steps"] = int(total) + int(extra_steps)
        values.pop("max_train_epochs", None)
    new = ctx.store.add("train", job["name"], job["script"], values, job["run_dir"], job["processes"], job["gpu_ids"], job_id)
    return ctx.job_view(ctx.store.get(new))


@router.post("/api/jobs/{job_id}/{action}")
def api_control(job_id: int, action: str, ctx: Context = Depends(get_ctx)):
    """stop (state + LoRA saved, as Ctrl-C), save-now, sample-now: read by the trainer between steps."""
    if action not in ("stop", "save-now", "sample-now"):
        raise HTTPException(404, f"no action {action}")
    ctx.job_or_404(job_id)
    try:
        ctx.runner.control(job_id, action)
    except ValueError as e:
        raise UserError(str(e)) from None
    return {"result": "requested"}


@router.post("/api/queue/order")
def api_order(ids: list[int] = Body(..., embed=True), ctx: Context = Depends(get_ctx)):
    ctx.store.reorder(ids)
    return {"queue": [j["id"] for j in ctx.store.with_status("queued")]}


@router.get("/api/jobs/{job_id}/metrics")
def api_metrics(job_id: int, max_points: int = 2000, ctx: Context = Depends(get_ctx)):
    return runs.metrics(ctx.run_folder(job_id), max_points)


@router.get("/api/jobs/{job_id}/samples")
def api_samples(job_id: int, ctx: Context = Depends(get_ctx)):
    folder = ctx.run_folder(job_id)
    return {"samples": [dict(s, path=ctx.roots.relative(folder / s["file"])) for s in runs.samples(folder)]}


@router.get("/api/jobs/{job_id}/files")
def api_files(job_id: int, ctx: Context = Depends(get_ctx)):
    folder = ctx.run_folder(job_id)
    return {"folder": ctx.roots.relative(folder), "files": runs.files(folder)}


@router.get("/api/jobs/{job_id}/image-losses")
def api_image_losses(job_id: int, top: int = 20, ctx: Context = Depends(get_ctx)):
    """Per-image loss (mean over the steps each image was trained in), outliers first; ``path`` inside the root, if any."""
    from ..paths import PathRefused

    out = runs.image_losses(ctx.run_folder(job_id), top)
    for item in out["images"]:
        try:
            item["path"] = ctx.roots.relative(ctx.roots.resolve(item["key"], must_exist=True))
        except PathRefused:  # not a file inside the root (a saved dataset's key, or moved): shown, not linked
            item["path"] = None
    return out


@router.get("/api/jobs/{job_id}/log")
def api_log(job_id: int, lines: int = 200, ctx: Context = Depends(get_ctx)):
    return {"log": runs.log_tail(ctx.job_or_404(job_id)["log"], lines)}


@router.get("/api/jobs/{job_id}/events")
async def api_events(job_id: int, offset: int = 0, ctx: Context = Depends(get_ctx)):
    """Server-sent events: 'job' (status) every second, 'metrics' (new rows since ``offset``); ends with the job."""
    ctx.job_or_404(job_id)

    async def stream():
        pos = offset
        while True:
            job = ctx.store.get(job_id)
            yield f"event: job\ndata: {json.dumps(ctx.job_view(job))}\n\n"
            if job["run_dir"]:
                rows, pos = runs.read_jsonl(Path(job["run_dir"]) / runs.METRICS_FILE, pos)
                if rows:
                    yield f"event: metrics\ndata: {json.dumps({'rows': rows, 'offset': pos})}\n\n"
            if job["status"] in FINAL:
                yield "event: end\ndata: {}\n\n"
                return
            await asyncio.sleep(1.0)

    return StreamingResponse(stream(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
