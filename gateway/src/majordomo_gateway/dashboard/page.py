"""``/dashboard``: the page, and its files from the package (no CDN, no build step at run time).

Without a valid login, ``/dashboard`` is the login form and only ``static/public/`` (its script and
the style sheet) is served; the application's script, the charting library and every number need
a session.  Files are read once and kept in memory: a handful of small files.
"""

from __future__ import annotations

import mimetypes
from functools import cache
from pathlib import Path

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from majordomo_gateway.dashboard.auth import Authenticate

__all__ = ["STATIC_DIR", "page_routes"]

STATIC_DIR = Path(__file__).parent / "static"
_SECURITY_HEADERS = {
    # Everything the page loads comes from here; nothing is inlined, nothing is fetched elsewhere.
    "content-security-policy": "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
                               "frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
    "x-content-type-options": "nosniff",
    "referrer-policy": "same-origin",
}


@cache
def _file(relative: str) -> bytes | None:
    path = (STATIC_DIR / relative).resolve()
    if STATIC_DIR.resolve() not in path.parents or not path.is_file():
        return None
    return path.read_bytes()


def _send(relative: str, *, cache_control: str = "no-cache") -> Response:
    body = _file(relative)
    if body is None:
        return Response(b"not found", 404, media_type="text/plain")
    media_type = mimetypes.guess_type(relative)[0] or "application/octet-stream"
    if media_type.startswith("text/") or media_type == "application/javascript":
        media_type += "; charset=utf-8"
    return Response(body, media_type=media_type, headers={**_SECURITY_HEADERS, "cache-control": cache_control})


def page_routes(authenticate: Authenticate) -> list[Route]:
    async def index(request: Request) -> Response:
        if await authenticate(request) is None:
            return _send("public/login.html", cache_control="no-store")
        return _send("index.html", cache_control="no-store")

    async def static(request: Request) -> Response:
        relative = request.path_params["path"]
        if not relative.startswith("public/") and await authenticate(request) is None:
            return Response(b"log in first", 401, media_type="text/plain")
        return _send(relative)

    return [Route("/dashboard", index, methods=["GET"]), Route("/dashboard/", index, methods=["GET"]),
            Route("/dashboard/static/{path:path}", static, methods=["GET"])]
