"""Dataset page API: path completion, files, the preflight report, captions, kohya folders, the demo data."""

from __future__ import annotations

import os
import shutil

from fastapi import APIRouter, Body, Depends, HTTPException
from fastapi.responses import FileResponse

from library.errors import UserError

from .. import datasets, forms
from ..context import REPO, Context, get_ctx

router = APIRouter()


@router.get("/api/fs/complete")
def api_complete(prefix: str = "", ctx: Context = Depends(get_ctx)):
    return {"entries": ctx.roots.complete(prefix)}


@router.get("/api/file")
def api_file(path: str, ctx: Context = Depends(get_ctx)):
    file = ctx.roots.resolve(path, must_exist=True)
    if not file.is_file():
        raise HTTPException(404, f"{path} is not a file")
    return FileResponse(file)


@router.post("/api/dataset/preflight")
def api_preflight(values: dict = Body(...), processes: int = Body(1), ctx: Context = Depends(get_ctx)):
    """The dataset report (folders, repeats, buckets, captions, steps) and the step plan."""
    resolved = forms.resolve_paths(forms.clean(values), ctx.roots)
    return datasets.preflight(resolved, processes)


@router.post("/api/dataset/kohya-folder")
def api_kohya_folder(source: str = Body(...), dest: str = Body(...), repeats: int = Body(10),
                     trigger: str = Body(...), class_name: str = Body(""), ext: str = Body(".txt"),
                     ctx: Context = Depends(get_ctx)):
    """Copy a flat folder of images (+ captions) into DEST/NN_trigger class/, kohya's layout."""
    roots = ctx.roots
    folder = datasets.make_kohya_folder(roots.resolve(source, must_exist=True), roots.resolve(dest), repeats,
                                        trigger, class_name, ext)
    return {"folder": roots.relative(folder), "train_data_dir": roots.relative(folder.parent)}


@router.get("/api/dataset/captions")
def api_captions(folder: str, ext: str = ".txt", ctx: Context = Depends(get_ctx)):
    base = ctx.roots.resolve(folder, must_exist=True)
    items = datasets.captions(base, ext)
    return {"items": [dict(i, image=ctx.roots.relative(i["image"])) for i in items]}


@router.put("/api/dataset/caption")
def api_caption(image: str = Body(...), text: str = Body(...), ext: str = Body(".txt"), ctx: Context = Depends(get_ctx)):
    path = ctx.roots.resolve(image, must_exist=True)
    if path.suffix.lower() not in datasets.IMAGE_EXTENSIONS:
        raise UserError(f"{image} is not an image")
    _check_ext(ext)
    return {"caption": ctx.roots.relative(datasets.write_caption(path, text, ext))}


def _check_ext(ext: str) -> None:
    if not ext.startswith(".") or "/" in ext or os.sep in ext:
        raise UserError(f"caption extension {ext!r} must look like .txt")


@router.post("/api/demo")
def api_demo(folder: str = Body("demo", embed=True), ctx: Context = Depends(get_ctx)):
    """Copy examples/demo into the root and queue the tiny model's creation: a run to try the GUI with."""
    target = ctx.roots.resolve(folder)
    if not target.exists():
        shutil.copytree(REPO / "examples" / "demo", target)
    model = target / "tiny_sd15.safetensors"
    job_id = None
    if not model.exists():
        job_id = ctx.store.add("make_tiny_model", "tiny model", "make_tiny_model",
                               ["--family", "sd1", "--out", str(model)], None)
    rel = ctx.roots.relative(target)
    values = {k: v for k, v in forms.preset("demo", "train_network").items() if k not in ("output_dir",)}
    values.update(pretrained_model_name_or_path=f"{rel}/tiny_sd15.safetensors", train_data_dir=f"{rel}/img",
                  reg_data_dir=f"{rel}/reg", sample_prompts=f"{rel}/prompts.txt")
    return {"folder": rel, "train_data_dir": f"{rel}/img", "reg_data_dir": f"{rel}/reg", "job": job_id, "values": values}


@router.post("/api/dataset/caption-job")
def api_caption_job(folder: str = Body(...), caption_weights: str = Body(...), ext: str = Body(".txt"),
                    prefix: str = Body(""), suffix: str = Body(""), recursive: bool = Body(True),
                    overwrite: bool = Body(False), ctx: Context = Depends(get_ctx)):
    """Queue tools/caption.py on a dataset folder (a local BLIP/BLIP-2 model folder); existing captions are kept
    unless ``overwrite``."""
    from .tools import queue_tool

    base = ctx.roots.resolve(folder, must_exist=True)
    if not base.is_dir():
        raise UserError(f"{folder} is not a folder; give the dataset folder (e.g. img)")
    weights = ctx.roots.resolve(caption_weights, must_exist=True)
    _check_ext(ext)
    args = [str(base), "--caption_weights", str(weights), "--caption_extension", ext]
    args += [f"--prefix={prefix}"] if prefix else []
    args += [f"--suffix={suffix}"] if suffix else []
    args += ["--recursive"] if recursive else []
    args += ["--overwrite"] if overwrite else []
    return queue_tool(ctx, "caption", args, name=f"caption {ctx.roots.relative(base)}")
