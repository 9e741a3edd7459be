"""Compare page API: a finished run's checkpoints and grids (checkpoint x strength x prompt, made by a job),
the chosen checkpoint, the run history and the settings diff between two runs."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Body, Depends

from library.errors import UserError

from .. import compare
from ..context import Context, get_ctx
from ..jobs import FINAL

router = APIRouter()


def _finished_run(ctx: Context, job_id: int) -> dict:
    job = ctx.job_or_404(job_id)
    if job["kind"] != "train" or not job["run_dir"]:
        raise UserError(f"job {job_id} is not a training run; the Compare page compares training runs")
    return job


@router.get("/api/jobs/{job_id}/compare")
def api_compare(job_id: int, ctx: Context = Depends(get_ctx)):
    """A run's checkpoints, its default prompts (its sample prompts), its grids so far and the chosen checkpoint."""
    job = _finished_run(ctx, job_id)
    run_dir = Path(job["run_dir"])
    grid_jobs = [ctx.job_view(j) for j in ctx.store.all() if j["kind"] == "compare_grid" and j["parent"] == job_id]
    return {"job": ctx.job_view(job), "checkpoints": compare.checkpoints(run_dir),
            "prompts": compare.default_prompts(run_dir, job["options"]), "grids": compare.grids(run_dir),
            "grid_jobs": grid_jobs, "best": compare.read_best(run_dir), "folder": ctx.roots.relative(run_dir)}


@router.post("/api/jobs/{job_id}/grid")
def api_grid(job_id: int, checkpoints: list[str] = Body(...), strengths: list[float] = Body([1.0]),
             prompts: list[str] = Body(...), seed: int = Body(1), steps: int = Body(20), scale: float = Body(7.0),
             width: int | None = Body(None), height: int | None = Body(None), sampler: str = Body("euler_a"),
             ctx: Context = Depends(get_ctx)):
    """Queue a grid job: every checkpoint at every strength for every prompt (kohya prompt syntax), one seed per prompt."""
    from library.vocabulary import SAMPLERS

    job = _finished_run(ctx, job_id)
    if job["status"] not in FINAL:
        raise UserError(f"job {job_id} is {job['status']}; compare its checkpoints when it has ended")
    if sampler not in SAMPLERS:
        raise UserError(f"sampler {sampler!r} is not known; use one of {', '.join(SAMPLERS)}")
    run_dir = Path(job["run_dir"])
    prompts = [p.strip() for p in prompts if p.strip()]
    compare.check_request(run_dir, checkpoints, strengths, prompts, steps, width, height)
    options = job["options"]
    folder = compare.new_grid_folder(run_dir)
    compare.write_request(folder, {
        "run_dir": str(run_dir), "base_model": options["pretrained_model_name_or_path"], "checkpoints": checkpoints,
        "strengths": strengths, "prompts": prompts, "seed": seed, "steps": steps, "scale": scale, "width": width,
        "height": height, "sampler": sampler, "clip_skip": options.get("clip_skip"),
        "v_parameterization": options.get("v_parameterization") or None})
    grid_id = ctx.store.add("compare_grid", f"grid {folder.name} of #{job_id}", "compare_grid", ["--grid", str(folder)],
                            None, parent=job_id)
    return {"grid": folder.name, "job": ctx.job_view(ctx.store.get(grid_id))}


@router.post("/api/jobs/{job_id}/best")
def api_best(job_id: int, file: str = Body(...), keep_copy: bool = Body(False), note: str = Body(""),
             ctx: Context = Depends(get_ctx)):
    """Mark a checkpoint as the run's chosen one (RUN/best.json); ``keep_copy`` also copies it to RUN/best/ (never over a file)."""
    job = _finished_run(ctx, job_id)
    return compare.choose_best(Path(job["run_dir"]), file, keep_copy, note)


@router.get("/api/history")
def api_history(ctx: Context = Depends(get_ctx)):
    """Every training run, newest first: name, status, steps, last loss, chosen checkpoint."""
    out = []
    for job in ctx.store.all():
        if job["kind"] != "train":
            continue
        view = ctx.job_view(job)
        run = view["run"]
        out.append({"id": job["id"], "name": job["name"], "status": job["status"], "parent": job["parent"],
                    "folder": view["run_dir_rel"], "step": run.get("step"), "total": run.get("total"),
                    "loss": run.get("loss"), "created": job["created"], "ended": job["ended"],
                    "best": compare.read_best(Path(job["run_dir"])) if job["run_dir"] else None})
    return {"runs": out}


@router.get("/api/diff")
def api_diff(a: int, b: int, ctx: Context = Depends(get_ctx)):
    """The settings that differ between runs ``a`` and ``b`` (their options over their LoRA's ss_* metadata)."""
    ja, jb = _finished_run(ctx, a), _finished_run(ctx, b)
    sa, sb = compare.run_settings(ja), compare.run_settings(jb)
    diff = compare.settings_diff(sa, sb)
    return {"a": a, "b": b, "diff": diff, "same": len(set(sa) | set(sb)) - len(diff)}
