"""The FastAPI app: pages (Jinja2) and the JSON API every page action uses (OpenAPI at /docs).

Why API first: scripts, a remote machine and the ComfyUI node drive the same runs as the page.
Routes are thin: paths go through ``paths.Roots``, options through ``forms`` (library.options), jobs
through ``jobs`` and run folders through ``runs``. Errors are JSON ``{"error", "field"}`` with 400
(bad input), 403 (path outside the root), 404 (no such job/file).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlencode

from fastapi import Body, FastAPI, HTTPException, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, PlainTextResponse, RedirectResponse, StreamingResponse
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates

from library.errors import UserError
from library.train.run_folder import read_status

from . import datasets, forms, runs, security
from .jobs import FINAL, TOOLS, JobStore, Runner
from .lora_settings import read_metadata, settings_from_metadata
from .paths import PathRefused, Roots

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
TROUBLESHOOTING = "/help/troubleshooting.md"
PAGES = ("dataset", "configure", "runs", "tools")


def create_app(root: str | os.PathLike = ".", token: str | None = None, state_dir: str | os.PathLike | None = None,
               allowed_hosts: tuple[str, ...] = security.LOCAL_HOSTS, start_runner: bool = True) -> FastAPI:
    """The app serving ``root``; jobs live in ``state_dir`` (default ROOT/.lorasmith-gui)."""
    roots = Roots(root)
    state = Path(state_dir) if state_dir else roots.root / ".lorasmith-gui"
    store = JobStore(state / "jobs.sqlite")
    runner = Runner(store, roots.root, state / "logs")
    app = FastAPI(title="lorasmith GUI", description="Set up, launch and watch LoRA training runs. See docs/gui.md.")
    app.state.roots, app.state.store, app.state.runner = roots, store, runner
    templates = Jinja2Templates(directory=str(HERE / "templates"))
    app.mount("/static", StaticFiles(directory=str(HERE / "static")), name="static")

    @app.middleware("http")
    async def guard(request: Request, call_next):
        refused = security.check(request, token, allowed_hosts)
        return refused if refused is not None else await call_next(request)

    @app.exception_handler(UserError)
    async def user_error(request, exc: UserError):
        return JSONResponse({"error": str(exc), "field": getattr(exc, "field", None)}, status_code=400)

    @app.exception_handler(PathRefused)
    async def path_refused(request, exc: PathRefused):
        return JSONResponse({"error": str(exc)}, status_code=403)

    if start_runner:
        @app.on_event("startup")
        async def _start():
            runner.tick()  # re-attach to running jobs, settle finished ones, before the first page
            runner.start_thread()

        @app.on_event("shutdown")
        async def _stop():
            runner.stop_thread()

    def job_or_404(job_id: int) -> dict:
        job = store.get(job_id)
        if job is None:
            raise HTTPException(404, f"no job {job_id}")
        return job

    def job_view(job: dict) -> dict:
        view = {k: v for k, v in job.items()}
        view["run"] = read_status(job["run_dir"]) if job["run_dir"] else {}
        view["run_dir_rel"] = roots.relative(job["run_dir"]) if job["run_dir"] else None
        if job["status"] == "failed":
            view["help"] = TROUBLESHOOTING
        return view

    def run_folder(job_id: int) -> Path:
        job = job_or_404(job_id)
        if not job["run_dir"]:
            raise HTTPException(404, f"job {job_id} has no run folder")
        return Path(job["run_dir"])

    # ------------------------------------------------------------------------------- pages
    def page_context(request: Request, page: str) -> dict:
        given = request.query_params.get("token")
        tq = "?" + urlencode({"token": given}) if given else ""  # static files need the token on a network
        return {"page": page, "root": str(roots.root), "tq": tq}

    @app.get("/", include_in_schema=False)
    def index(request: Request):
        query = f"?{request.url.query}" if request.url.query else ""
        return RedirectResponse(f"/runs{query}")

    @app.get("/{page}", response_class=HTMLResponse, include_in_schema=False)
    def page(request: Request, page: str):
        if page not in PAGES:
            raise HTTPException(404, f"no page {page}")
        return templates.TemplateResponse(request, f"{page}.html", page_context(request, page))

    @app.get("/runs/{job_id}", response_class=HTMLResponse, include_in_schema=False)
    def run_page(request: Request, job_id: int):
        job_or_404(job_id)
        return templates.TemplateResponse(request, "run.html", {**page_context(request, "runs"), "job_id": job_id})

    @app.get("/help/{name}", response_class=PlainTextResponse, include_in_schema=False)
    def help_page(name: str):
        path = REPO / "docs" / name
        if path.suffix != ".md" or path.parent != REPO / "docs" or not path.is_file():
            raise HTTPException(404, f"no help page {name}")
        return path.read_text(encoding="utf-8")

    # ------------------------------------------------------------------------------- options
    @app.get("/api/schema")
    def api_schema(script: str = "train_network"):
        """Every option (name, type, default, help, group, choices, limits) for the form."""
        return forms.schema(script)

    @app.post("/api/validate")
    def api_validate(script: str = Body("train_network"), values: dict = Body(...)):
        """The CLI's validation of form values: ok/error/field, notices, the equivalent CLI and TOML."""
        return forms.report(values, script, roots)

    @app.get("/api/presets")
    def api_presets():
        return {"presets": forms.presets()}

    @app.get("/api/presets/{name}")
    def api_preset(name: str, script: str = "train_network"):
        return {"name": name, "values": forms.preset(name, script)}

    @app.post("/api/config/load")
    def api_config_load(path: str = Body(...), script: str = Body("train_network")):
        return {"values": forms.load_toml(roots.resolve(path, must_exist=True), script)}

    @app.post("/api/config/save")
    def api_config_save(path: str = Body(...), values: dict = Body(...), script: str = Body("train_network"),
                        overwrite: bool = Body(False)):
        target = roots.resolve(path)
        report = forms.report(values, script, roots)
        if not report["ok"]:
            raise UserError(report["error"])
        if target.exists() and not overwrite:
            raise UserError(f"{path} exists; tick overwrite or pick another name")
        _write_text_atomic(target, report["toml"])
        return {"path": roots.relative(target)}

    @app.post("/api/lora-settings")
    def api_lora_settings(path: str = Body(..., embed=True)):
        """A new run's values from a LoRA's ss_* metadata."""
        file = roots.resolve(path, must_exist=True)
        try:
            md = read_metadata(str(file))
        except Exception as e:  # not a safetensors file
            raise UserError(f"{path}: cannot read safetensors metadata ({e})") from None
        return settings_from_metadata(md)

    # ------------------------------------------------------------------------------- files and datasets
    @app.get("/api/fs/complete")
    def api_complete(prefix: str = ""):
        return {"entries": roots.complete(prefix)}

    @app.get("/api/file")
    def api_file(path: str):
        file = roots.resolve(path, must_exist=True)
        if not file.is_file():
            raise HTTPException(404, f"{path} is not a file")
        return FileResponse(file)

    @app.post("/api/dataset/preflight")
    def api_preflight(values: dict = Body(...), processes: int = Body(1)):
        """The dataset report (folders, repeats, buckets, captions, steps) and the step plan."""
        resolved = forms.resolve_paths(forms.clean(values), roots)
        return datasets.preflight(resolved, processes)

    @app.post("/api/dataset/kohya-folder")
    def api_kohya_folder(source: str = Body(...), dest: str = Body(...), repeats: int = Body(10),
                         trigger: str = Body(...), class_name: str = Body(""), ext: str = Body(".txt")):
        """Copy a flat folder of images (+ captions) into DEST/NN_trigger class/, kohya's layout."""
        folder = datasets.make_kohya_folder(roots.resolve(source, must_exist=True), roots.resolve(dest), repeats,
                                            trigger, class_name, ext)
        return {"folder": roots.relative(folder), "train_data_dir": roots.relative(folder.parent)}

    @app.get("/api/dataset/captions")
    def api_captions(folder: str, ext: str = ".txt"):
        base = roots.resolve(folder, must_exist=True)
        items = datasets.captions(base, ext)
        return {"items": [dict(i, image=roots.relative(i["image"])) for i in items]}

    @app.put("/api/dataset/caption")
    def api_caption(image: str = Body(...), text: str = Body(...), ext: str = Body(".txt")):
        path = roots.resolve(image, must_exist=True)
        if path.suffix.lower() not in datasets.IMAGE_EXTENSIONS:
            raise UserError(f"{image} is not an image")
        if not ext.startswith(".") or "/" in ext or os.sep in ext:
            raise UserError(f"caption extension {ext!r} must look like .txt")
        return {"caption": roots.relative(datasets.write_caption(path, text, ext))}

    # ------------------------------------------------------------------------------- jobs
    @app.get("/api/jobs")
    def api_jobs():
        return {"jobs": [job_view(j) for j in store.all()]}

    @app.post("/api/jobs")
    def api_create(values: dict | None = Body(None), config_path: str | None = Body(None), script: str = Body("train_network"),
                   name: str | None = Body(None), processes: int = Body(1), gpu_ids: str | None = Body(None)):
        """Queue a training run from form values and/or a TOML file (form values win)."""
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
        return job_view(store.get(job_id))

    @app.get("/api/jobs/{job_id}")
    def api_job(job_id: int):
        return job_view(job_or_404(job_id))

    @app.post("/api/jobs/{job_id}/cancel")
    def api_cancel(job_id: int):
        job_or_404(job_id)
        return {"result": runner.cancel(job_id)}

    @app.post("/api/jobs/{job_id}/resume")
    def api_resume(job_id: int, extra_steps: int = Body(0, embed=True)):
        """A new job continuing from the newest state in the run folder (+ extra_steps: extend)."""
        job = job_or_404(job_id)
        if job["kind"] != "train" or job["status"] not in FINAL:
            raise UserError(f"job {job_id} is {job['status']}; only a finished or stopped training can be resumed")
        from library.train.checkpoints import latest_state

        if latest_state(job["run_dir"]) is None:
            raise UserError(f"{roots.relative(job['run_dir'])} holds no complete state to resume from "
                            "(train with save_state or stop the run to save one)")
        values = dict(job["options"], resume=job["run_dir"])
        if extra_steps:
            if extra_steps < 1:
                raise UserError("extra_steps must be at least 1")
            total = read_status(job["run_dir"]).get("total") or values.get("max_train_steps") or 0
            values["max_train_steps"] = int(total) + int(extra_steps)
            values.pop("max_train_epochs", None)
        new = store.add("train", job["name"], job["script"], values, job["run_dir"], job["processes"], job["gpu_ids"], job_id)
        return job_view(store.get(new))

    @app.post("/api/jobs/{job_id}/{action}")
    def api_control(job_id: int, action: str):
        """stop (state + LoRA saved, as Ctrl-C), save-now, sample-now: read by the trainer between steps."""
        if action not in ("stop", "save-now", "sample-now"):
            raise HTTPException(404, f"no action {action}")
        job_or_404(job_id)
        try:
            runner.control(job_id, action)
        except ValueError as e:
            raise UserError(str(e)) from None
        return {"result": "requested"}

    @app.post("/api/queue/order")
    def api_order(ids: list[int] = Body(..., embed=True)):
        store.reorder(ids)
        return {"queue": [j["id"] for j in store.with_status("queued")]}

    @app.get("/api/jobs/{job_id}/metrics")
    def api_metrics(job_id: int, max_points: int = 2000):
        return runs.metrics(run_folder(job_id), max_points)

    @app.get("/api/jobs/{job_id}/samples")
    def api_samples(job_id: int):
        folder = run_folder(job_id)
        return {"samples": [dict(s, path=roots.relative(folder / s["file"])) for s in runs.samples(folder)]}

    @app.get("/api/jobs/{job_id}/files")
    def api_files(job_id: int):
        folder = run_folder(job_id)
        return {"folder": roots.relative(folder), "files": runs.files(folder)}

    @app.get("/api/jobs/{job_id}/log")
    def api_log(job_id: int, lines: int = 200):
        return {"log": runs.log_tail(job_or_404(job_id)["log"], lines)}

    @app.get("/api/jobs/{job_id}/events")
    async def api_events(job_id: int, offset: int = 0):
        """Server-sent events: 'job' (status) every second, 'metrics' (new rows since ``offset``); ends with the job."""
        job_or_404(job_id)

        async def stream():
            pos = offset
            while True:
                job = store.get(job_id)
                view = job_view(job)
                yield f"event: job\ndata: {json.dumps(view)}\n\n"
                if job["run_dir"]:
                    rows, pos = runs.read_jsonl(Path(job["run_dir"]) / runs.METRICS_FILE, pos)
                    if rows:
                        yield f"event: metrics\ndata: {json.dumps({'rows': rows, 'offset': pos})}\n\n"
                if job["status"] in FINAL:
                    yield "event: end\ndata: {}\n\n"
                    return
                await asyncio.sleep(1.0)

        return StreamingResponse(stream(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})

    # ------------------------------------------------------------------------------- tools
    @app.post("/api/tools/{tool}")
    def api_tool(tool: str, args: list[str] = Body(..., embed=True)):
        """Run tools/<tool>.py with an argument list as a job (merge_lora, resize_lora, extract_lora, convert_lora, ...)."""
        if tool not in TOOLS:
            raise HTTPException(404, f"no tool {tool}; tools: {', '.join(TOOLS)}")
        for a in args:  # every path-looking argument (or --key=value value) must stay inside the root
            value = a.split("=", 1)[1] if a.startswith("-") and "=" in a else (None if a.startswith("-") else a)
            if value and ("/" in value or os.sep in value or "." in value):
                roots.resolve(value)
        job_id = store.add(tool, tool, tool, [str(a) for a in args], None)
        return job_view(store.get(job_id))

    tool_forms: dict = {}

    @app.get("/api/tools/{tool}/schema")
    def api_tool_schema(tool: str):
        """The tool's options from its own parser (tools/<tool>.py build_parser), for the form."""
        if tool not in TOOLS:
            raise HTTPException(404, f"no tool {tool}")
        if tool not in tool_forms:
            out = subprocess.run([sys.executable, "-m", "webui.tool_forms", tool], capture_output=True, text=True,
                                 timeout=120, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})
            if out.returncode != 0:
                raise HTTPException(500, f"could not read the options of tools/{tool}.py: {out.stderr.strip()[-300:]}")
            tool_forms[tool] = json.loads(out.stdout.strip().splitlines()[-1])
        return tool_forms[tool]

    @app.get("/api/tools/{tool}/help")
    def api_tool_help(tool: str):
        if tool not in TOOLS:
            raise HTTPException(404, f"no tool {tool}")
        out = subprocess.run([sys.executable, str(TOOLS[tool]), "--help"], capture_output=True, text=True, timeout=120,
                             cwd=roots.root, env={**os.environ, "PYTHONPATH": str(REPO)})
        return {"help": out.stdout or out.stderr}

    @app.post("/api/demo")
    def api_demo(folder: str = Body("demo", embed=True)):
        """Copy examples/demo into the root and queue the tiny model's creation: a run to try the GUI with."""
        target = roots.resolve(folder)
        if not target.exists():
            shutil.copytree(REPO / "examples" / "demo", target)
        model = target / "tiny_sd15.safetensors"
        job_id = None
        if not model.exists():
            job_id = store.add("make_tiny_model", "tiny model", "make_tiny_model",
                               ["--family", "sd1", "--out", str(model)], None)
        rel = roots.relative(target)
        values = {k: v for k, v in forms.preset("demo", "train_network").items() if k not in ("output_dir",)}
        values.update(pretrained_model_name_or_path=f"{rel}/tiny_sd15.safetensors", train_data_dir=f"{rel}/img",
                      reg_data_dir=f"{rel}/reg", sample_prompts=f"{rel}/prompts.txt")
        return {"folder": rel, "train_data_dir": f"{rel}/img", "reg_data_dir": f"{rel}/reg", "job": job_id, "values": values}

    @app.get("/api/health")
    def api_health():
        return {"ok": True, "root": str(roots.root), "time": time.time()}

    return app


def _free_folder(parent: Path, name: str) -> str:
    """parent/name, or parent/name-2, -3 ... when taken: every GUI run gets its own run folder."""
    candidate, n = parent / name, 1
    while candidate.exists():
        n += 1
        candidate = parent / f"{name}-{n}"
    candidate.mkdir(parents=True)  # taken now: the next run named alike gets the next number
    return str(candidate)


def _write_text_atomic(path: Path, text: str) -> None:
    """``text`` at ``path`` through the one atomic writer (library.atomic)."""
    from library import atomic

    atomic.write_text(str(path), text)


