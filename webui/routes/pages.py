"""The HTML pages (Jinja2 templates over the JSON API) and the docs served as help pages."""

from __future__ import annotations

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse

from ..context import REPO, Context, get_ctx
from ..failures import render

router = APIRouter(include_in_schema=False)
PAGES = ("dataset", "configure", "runs", "compare", "tools")


@router.get("/")
def index(request: Request):
    query = f"?{request.url.query}" if request.url.query else ""
    return RedirectResponse(f"/runs{query}")


@router.get("/runs/{job_id}", response_class=HTMLResponse)
def run_page(request: Request, job_id: int, ctx: Context = Depends(get_ctx)):
    ctx.job_or_404(job_id)
    return ctx.page(request, "runs", template="run", job_id=job_id)


@router.get("/help/{name}", response_class=HTMLResponse)
def help_page(name: str):
    """docs/NAME as HTML, with anchors on headings and table rows (the failure view deep-links into it)."""
    path = REPO / "docs" / name
    if path.suffix != ".md" or path.parent != REPO / "docs" or not path.is_file():
        raise HTTPException(404, f"no help page {name}")
    return HTMLResponse(render(name))


@router.get("/{page}", response_class=HTMLResponse)
def page(request: Request, page: str, ctx: Context = Depends(get_ctx)):
    if page not in PAGES:
        raise HTTPException(404, f"no page {page}")
    return ctx.page(request, page)
