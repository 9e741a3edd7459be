"""Tools page API: run tools/<tool>.py with an argument list as a job; its form from its own parser."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

from fastapi import APIRouter, Body, Depends, HTTPException

from ..context import REPO, Context, get_ctx
from ..jobs import TOOLS

router = APIRouter()
_forms: dict = {}


def queue_tool(ctx: Context, tool: str, args: list[str], name: str | None = None) -> dict:
    """Queue tools/<tool>.py ARGS as a job; every path-looking argument must stay inside the root."""
    if tool not in TOOLS:
        raise HTTPException(404, f"no tool {tool}; tools: {', '.join(TOOLS)}")
    for a in args:  # a path-looking argument (or --key=value value) must stay inside the root
        value = a.split("=", 1)[1] if a.startswith("-") and "=" in a else (None if a.startswith("-") else a)
        if value and ("/" in value or os.sep in value or "." in value):
            ctx.roots.resolve(value)
    job_id = ctx.store.add(tool, name or tool, tool, [str(a) for a in args], None)
    return ctx.job_view(ctx.store.get(job_id))


@router.post("/api/tools/{tool}")
def api_tool(tool: str, args: list[str] = Body(..., embed=True), ctx: Context = Depends(get_ctx)):
    """Run tools/<tool>.py with an argument list as a job (merge_lora, resize_lora, extract_lora, convert_lora, ...)."""
    return queue_tool(ctx, tool, args)


@router.get("/api/tools/{tool}/schema")
def api_tool_schema(tool: str):
    """The tool's options from its own parser (tools/<tool>.py build_parser), for the form."""
    if tool not in TOOLS:
        raise HTTPException(404, f"no tool {tool}")
    if tool not in _forms:
        out = subprocess.run([sys.executable, "-m", "webui.tool_forms", tool], capture_output=True, text=True,
                             timeout=120, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})
        if out.returncode != 0:
            raise HTTPException(500, f"could not read the options of tools/{tool}.py: {out.stderr.strip()[-300:]}")
        _forms[tool] = json.loads(out.stdout.strip().splitlines()[-1])
    return _forms[tool]


@router.get("/api/tools/{tool}/help")
def api_tool_help(tool: str, ctx: Context = Depends(get_ctx)):
    if tool not in TOOLS:
        raise HTTPException(404, f"no tool {tool}")
    out = subprocess.run([sys.executable, str(TOOLS[tool]), "--help"], capture_output=True, text=True, timeout=120,
                         cwd=ctx.roots.root, env={**os.environ, "PYTHONPATH": str(REPO)})
    return {"help": out.stdout or out.stderr}


@router.get("/api/health")
def api_health(ctx: Context = Depends(get_ctx)):
    return {"ok": True, "root": str(ctx.roots.root), "time": time.time()}
