"""What every route module needs: the root, the job store and runner, the templates and the job views.

Why one object on ``app.state``: routes live in one module per page (webui/routes/) and reach the
app's state through a FastAPI dependency instead of closures inside the app factory.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlencode

from fastapi import HTTPException, Request
from fastapi.templating import Jinja2Templates

from library.train.run_folder import read_status

from .jobs import JobStore, Runner
from .paths import Roots

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
TROUBLESHOOTING = "/help/troubleshooting.md"


@dataclass
class Context:
    roots: Roots
    store: JobStore
    runner: Runner
    templates: Jinja2Templates
    state_dir: Path  # the GUI's own folder: the job queue, logs, memory checks

    def job_or_404(self, job_id: int) -> dict:
        job = self.store.get(job_id)
        if job is None:
            raise HTTPException(404, f"no job {job_id}")
        return job

    def job_view(self, job: dict) -> dict:
        """A job row for the page: its run folder's status.json, the folder relative to the root, the help link."""
        from .failures import help_link

        view = dict(job)
        view["run"] = read_status(job["run_dir"]) if job["run_dir"] else {}
        view["run_dir_rel"] = self.roots.relative(job["run_dir"]) if job["run_dir"] else None
        if job["status"] == "failed":
            view["help"] = help_link(job.get("error"), TROUBLESHOOTING)
        return view

    def run_folder(self, job_id: int) -> Path:
        job = self.job_or_404(job_id)
        if not job["run_dir"]:
            raise HTTPException(404, f"job {job_id} has no run folder")
        return Path(job["run_dir"])

    def page(self, request: Request, page: str, template: str | None = None, **extra):
        """A page rendered from its template; the token rides along on static files on a network."""
        given = request.query_params.get("token")
        tq = "?" + urlencode({"token": given}) if given else ""
        context = {"page": page, "root": str(self.roots.root), "tq": tq, **extra}
        return self.templates.TemplateResponse(request, f"{template or page}.html", context)


def get_ctx(request: Request) -> Context:
    """FastAPI dependency: the app's Context."""
    return request.app.state.ctx
