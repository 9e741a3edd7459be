"""Configure page API: the option schema, validation, presets, TOML files, settings from a LoRA."""

from __future__ import annotations

from fastapi import APIRouter, Body, Depends, HTTPException

from library.errors import UserError

from .. import forms
from ..context import Context, get_ctx
from ..lora_settings import read_metadata, settings_from_metadata

router = APIRouter()


@router.get("/api/schema")
def api_schema(script: str = "train_network"):
    """Every option (name, type, default, help, group, choices, limits) for the form."""
    return forms.schema(script)


@router.post("/api/validate")
def api_validate(script: str = Body("train_network"), values: dict = Body(...), ctx: Context = Depends(get_ctx)):
    """The CLI's validation of form values: ok/error/field, notices, the equivalent CLI and TOML."""
    return forms.report(values, script, ctx.roots)


@router.get("/api/presets")
def api_presets():
    return {"presets": forms.presets()}


@router.get("/api/presets/{name}")
def api_preset(name: str, script: str = "train_network"):
    return {"name": name, "values": forms.preset(name, script)}


@router.post("/api/config/load")
def api_config_load(path: str = Body(...), script: str = Body("train_network"), ctx: Context = Depends(get_ctx)):
    return {"values": forms.load_toml(ctx.roots.resolve(path, must_exist=True), script)}


@router.post("/api/config/save")
def api_config_save(path: str = Body(...), values: dict = Body(...), script: str = Body("train_network"),
                    overwrite: bool = Body(False), ctx: Context = Depends(get_ctx)):
    from library import atomic

    target = ctx.roots.resolve(path)
    report = forms.report(values, script, ctx.roots)
    if not report["ok"]:
        raise UserError(report["error"])
    if target.exists() and not overwrite:
        raise UserError(f"{path} exists; tick overwrite or pick another name")
    atomic.write_text(str(target), report["toml"])
    return {"path": ctx.roots.relative(target)}


@router.post("/api/lora-settings")
def api_lora_settings(path: str = Body(..., embed=True), ctx: Context = Depends(get_ctx)):
    """A new run's values from a LoRA's ss_* metadata."""
    file = ctx.roots.resolve(path, must_exist=True)
    try:
        md = read_metadata(str(file))
    except Exception as e:  # not a safetensors file
        raise UserError(f"{path}: cannot read safetensors metadata ({e})") from None
    return settings_from_metadata(md)


@router.post("/api/memory")
def api_memory(values: dict = Body(..., embed=True), ctx: Context = Depends(get_ctx)):
    """A rough GPU memory estimate of a run (weights, LoRA + gradients, optimizer state, activations), before it starts."""
    from library.train.memory_estimate import estimate

    resolved = forms.resolve_paths(forms.clean(values), ctx.roots)
    if not resolved.get("pretrained_model_name_or_path"):
        raise UserError("pretrained_model_name_or_path: set the base model first; the estimate reads its size",)
    return estimate(resolved)


@router.post("/api/memory/check")
def api_memory_check(values: dict = Body(...), script: str = Body("train_network"), processes: int = Body(1),
                     gpu_ids: str | None = Body(None), ctx: Context = Depends(get_ctx)):
    """Queue a 2-step dry run of these options (first in the queue) that measures the peak memory; its record."""
    from .. import memory_check

    return memory_check.queue(ctx, ctx.state_dir, values, script, processes, gpu_ids)


@router.get("/api/memory/check/{job_id}")
def api_memory_check_result(job_id: int, ctx: Context = Depends(get_ctx)):
    """A memory check's record: estimate, measured peak (once the dry run ended), comparison, the job's status."""
    from .. import memory_check

    job = ctx.job_or_404(job_id)
    record = memory_check.read_record(ctx.state_dir, job_id)
    if job["kind"] != memory_check.KIND or record is None:
        raise HTTPException(404, f"job {job_id} is not a memory check")
    return {**record, "job_status": job["status"], "run": ctx.job_view(job)["run"]}
