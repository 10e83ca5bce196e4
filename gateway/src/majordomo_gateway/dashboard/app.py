"""The Starlette application behind ``/dashboard`` and the ``/api/v1/`` routes (the reports, the
login and the admin API).

Gateway.__call__ hands it only paths under those prefixes (one ``startswith`` on the proxy's
path), so proxied requests never reach Starlette.
"""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from majordomo_gateway.admin.api import AdminContext, admin_routes
from majordomo_gateway.admin.openapi import OPENAPI_PATH, openapi_document
from majordomo_gateway.clock import Clock, utc_now
from majordomo_gateway.dashboard.api import api_routes, error_response, json_response
from majordomo_gateway.dashboard.auth import Authenticate
from majordomo_gateway.dashboard.login import login_routes
from majordomo_gateway.dashboard.page import page_routes
from majordomo_gateway.storage.database import Database

__all__ = ["PREFIXES", "build_console", "handles"]

#: the paths this application answers (everything else is the proxy's)
PREFIXES = ("/api/v1/", "/dashboard")


def handles(path: str) -> bool:
    """Whether ``path`` is ours: /api/v1/..., /dashboard, /dashboard/... (not /dashboards).  Other
    /api/ paths stay the proxy's (Ollama's /api/generate gets its "unknown route" answer)."""
    return path.startswith("/api/v1/") or path == "/dashboard" or path.startswith("/dashboard/")


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "error")
    return error_response(exc.status_code, code, f"{request.method} {request.url.path}: {exc.detail}")


def build_console(database: Database, authenticate: Authenticate, admin: AdminContext,
                  clock: Clock = utc_now) -> Starlette:
    table, admin_api = admin_routes(database, authenticate, admin, clock)
    document = openapi_document(table)

    async def openapi(request: Request) -> Response:
        return json_response(document)

    routes = [*login_routes(database, clock), *api_routes(database, authenticate, clock), *admin_api,
              Route(OPENAPI_PATH, openapi, methods=["GET"]), *page_routes(authenticate)]
    return Starlette(routes=routes, exception_handlers={HTTPException: _http_error})
