"""Who may call the GUI: a token when it listens beyond localhost, a custom header on every change (CSRF).

Why: a page on any website can make the browser POST to 127.0.0.1; a custom header it cannot add
without a CORS preflight (which we never grant) stops that, and a Host check stops DNS rebinding.
On a network every request needs the token: ``X-Token`` header (pages: ``?token=`` once, kept by the
page's script and sent as the header; EventSource and images send it as ``?token=``, GET only).
"""

from __future__ import annotations

import hmac
import secrets

from starlette.requests import Request
from starlette.responses import JSONResponse

LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1", "[::1]")
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")
CHANGE_HEADER = "x-lorasmith"


def new_token() -> str:
    return secrets.token_urlsafe(24)


def _host_name(host_header: str) -> str:
    host = host_header.strip().lower()
    if host.startswith("["):
        return host[: host.find("]") + 1]
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def check(request: Request, token: str | None, allowed_hosts: tuple[str, ...]):
    """None when the request may pass, else the JSONResponse that refuses it."""
    given = request.headers.get("x-token") or ""
    auth = request.headers.get("authorization", "")
    if auth.lower().startswith("bearer "):
        given = auth[7:].strip()
    if not given and request.method in SAFE_METHODS:
        given = request.query_params.get("token", "")
    if token is not None:
        if not given or not hmac.compare_digest(given.encode(), token.encode()):
            return JSONResponse({"error": "missing or wrong token: send it as the X-Token header "
                                          "(open the page once as /?token=TOKEN; gui.py printed it)"}, status_code=401)
    elif _host_name(request.headers.get("host", "")) not in allowed_hosts:
        return JSONResponse({"error": "this GUI answers only on 127.0.0.1/localhost; "
                                      "use --listen HOST (with a token) for other names"}, status_code=403)
    if request.method not in SAFE_METHODS and CHANGE_HEADER not in request.headers and "x-token" not in request.headers:
        return JSONResponse({"error": f"changes need the {CHANGE_HEADER} header (the page's script sends it)"},
                            status_code=403)
    return None
