"""The FastAPI app: pages (Jinja2) and the JSON API every page action uses (OpenAPI at /docs).

Why API first: scripts, a remote machine and the ComfyUI node drive the same runs as the page.
The routes live in one module per page (webui/routes/) and reach the root, the job store and the
runner through ``context.Context``. Routes are thin: paths go through ``paths.Roots``, options through
``forms`` (library.options), jobs through ``jobs`` and run folders through ``runs``. Errors are JSON
``{"error", "field"}`` with 400 (bad input), 403 (path outside the root), 404 (no such job/file).
"""

from __future__ import annotations

import os
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates

from library.errors import UserError

from . import memory_check, security
from .context import HERE, Context
from .jobs import JobStore, Runner
from .notify import Notifier
from .paths import PathRefused, Roots
from .routes import compare, datasets, jobs, options, pages, tools


def create_app(root: str | os.PathLike = ".", token: str | None = None, state_dir: str | os.PathLike | None = None,
               allowed_hosts: tuple[str, ...] = security.LOCAL_HOSTS, start_runner: bool = True,
               notify_command: list[str] | None = None, base_url: str = "") -> FastAPI:
    """The app serving ``root``; jobs live in ``state_dir`` (default ROOT/.lorasmith-gui); ``notify_command``
    (webui/notify.py) runs when a job ends, ``base_url`` makes its ``{url}``."""
    roots = Roots(root)
    state = Path(state_dir) if state_dir else roots.root / ".lorasmith-gui"
    store = JobStore(state / "jobs.sqlite")
    runner = Runner(store, roots.root, state / "logs")
    runner.on_finish.append(partial(memory_check.settle, state))  # a dry run's result, its folder deleted
    notifier = Notifier(notify_command, state / "logs" / "notify.log", base_url) if notify_command else None
    if notifier is not None:
        runner.on_finish.append(notifier)
    app = FastAPI(title="lorasmith GUI", description="Set up, launch and watch LoRA training runs. See docs/gui.md.",
                  lifespan=_running_jobs(runner) if start_runner else None)
    app.state.roots, app.state.store, app.state.runner = roots, store, runner
    app.state.notifier = notifier
    app.state.ctx = Context(roots, store, runner, Jinja2Templates(directory=str(HERE / "templates")), state)
    app.mount("/static", StaticFiles(directory=str(HERE / "static")), name="static")
    _guard(app, token, allowed_hosts)
    for module in (options, datasets, compare, jobs, tools, pages):  # compare before jobs/{id}/{action}; pages last
        app.include_router(module.router)
    return app


def _guard(app: FastAPI, token: str | None, allowed_hosts: tuple[str, ...]) -> None:
    """Token, host and CSRF checks on every request; UserError -> 400, a path outside the root -> 403."""

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


def _running_jobs(runner: Runner):
    """The app's lifespan: the job runner works while the app serves (and notifications under way finish)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        runner.tick()  # re-attach to running jobs, settle finished ones, before the first page
        runner.start_thread()
        yield
        runner.stop_thread()
        if app.state.notifier is not None:
            app.state.notifier.wait(timeout=10)

    return lifespan
