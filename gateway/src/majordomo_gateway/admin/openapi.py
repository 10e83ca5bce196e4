"""``GET /api/v1/openapi.json``: an OpenAPI 3.1 document of every ``/api/v1`` route.

The admin routes are described from their table (admin/api.py), so a route added there is in the
document at once; the dashboard's read-only routes and the login are described here.  A test
checks that the routes mounted and the paths documented are the same set.
"""

from __future__ import annotations

import re
from typing import Any

from majordomo_gateway import __version__
from majordomo_gateway.admin.api import AdminRoute

__all__ = ["OPENAPI_PATH", "openapi_document"]

OPENAPI_PATH = "/api/v1/openapi.json"

_ERROR = {"$ref": "#/components/responses/Error"}
_TIME_PARAMS = ("since", "until", "tz")


def _query(name: str, description: str, *, repeat: bool = False) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "array", "items": {"type": "string"}} if repeat else {"type": "string"}
    return {"name": name, "in": "query", "required": False, "description": description, "schema": schema,
            **({"explode": True} if repeat else {})}


_PARAM_TEXT = {
    "since": "start: 7d, 24h, a date or an ISO date-time", "until": "end (default now)",
    "tz": "IANA time zone of dates and buckets (default UTC)", "every": "bucket size: hour, day, week or month",
    "group_by": "dimension to group by (repeatable): provider, model, key, feature, a metadata key, ...",
    "where": "filter Key=Value (repeatable)", "limit": "at most this many rows", "format": "json (default) or csv",
    "model": "only this model", "provider": "only this provider", "key": "only this key (id)",
    "status": "ok, error or an HTTP status", "cursor": "the previous page's `next`",
    "stack_by": "dimension the chart stacks by", "top": "how many series before `other`",
}

#: the dashboard's routes (dashboard/api.py, dashboard/login.py) and this document
_READ_ROUTES: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("/api/v1/usage", "Usage totals grouped as `majordomo report` groups them",
     ("group_by", "since", "until", "every", "where", "limit", "tz", "format")),
    ("/api/v1/requests", "Recorded requests, newest first, paged by `cursor`",
     ("since", "until", "where", "model", "provider", "key", "status", "limit", "cursor", "tz", "format")),
    ("/api/v1/requests/{request_id}", "One recorded request", ()),
    ("/api/v1/metadata-keys", "The metadata keys seen, with how many requests carry each", _TIME_PARAMS),
    ("/api/v1/overview", "The dashboard's overview: totals, a stacked series, top keys and models",
     ("since", "until", "tz", "stack_by", "every", "where", "top")),
)
_REPEATED = frozenset({"group_by", "where"})


def _path_params(path: str) -> list[dict[str, Any]]:
    return [{"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
            for name in re.findall(r"{(\w+)}", path)]


def _operation_id(method: str, path: str) -> str:
    words = re.sub(r"[{}]", "", path.removeprefix("/api/v1/")).replace("-", "_").split("/")
    return method.lower() + "_" + "_".join(words)


def _admin_operation(route: AdminRoute) -> dict[str, Any]:
    who = "admins" if route.access == "admin" else "admins, and members for what they own"
    operation: dict[str, Any] = {
        "operationId": _operation_id(route.method, route.path), "summary": route.summary,
        "description": f"For {who}.", "tags": ["admin"], "x-majordomo-access": route.access,
        "parameters": _path_params(route.path),
        "responses": {str(route.status): {
            "description": "done", "content": {"application/json": {"schema": {}}}},
            "400": _ERROR, "401": _ERROR, "403": _ERROR, "404": _ERROR},
    }
    if route.path.endswith("/audit"):
        operation["parameters"].append(_query("limit", "at most this many rows (1-10000, default 100)"))
    if route.body:
        properties = {name: schema for name, schema, _ in route.body}
        required = [name for name, _, needed in route.body if needed]
        schema: dict[str, Any] = {"type": "object", "properties": properties, "additionalProperties": False}
        if required:
            schema["required"] = required
        operation["requestBody"] = {"required": True, "content": {"application/json": {"schema": schema}}}
    if route.method != "GET":
        operation["description"] += (" With the session cookie, send the majordomo_csrf cookie's value as "
                                     "X-CSRF-Token.")
    return operation


def openapi_document(admin_routes: list[AdminRoute]) -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    for path, summary, params in _READ_ROUTES:
        paths.setdefault(path, {})["get"] = {
            "operationId": _operation_id("GET", path), "summary": summary, "tags": ["usage"],
            "description": "Any logged-in user; a member's answers cover only the keys it owns.",
            "parameters": _path_params(path) + [_query(p, _PARAM_TEXT[p], repeat=p in _REPEATED) for p in params],
            "responses": {"200": {"description": "the report",
                                  "content": {"application/json": {"schema": {}}, "text/csv": {"schema": {}}}},
                          "400": _ERROR, "401": _ERROR, "404": _ERROR}}
    paths["/api/v1/admin/login"] = {"post": {
        "operationId": "post_admin_login", "summary": "Log in: a session token (and the dashboard's cookies)",
        "tags": ["session"], "security": [],
        "requestBody": {"required": True, "content": {"application/json": {"schema": {
            "type": "object", "required": ["email", "password"],
            "properties": {"email": {"type": "string"}, "password": {"type": "string", "writeOnly": True}}}}}},
        "responses": {"200": {"description": "logged in", "content": {"application/json": {"schema": {
            "type": "object", "properties": {"token": {"type": "string"}, "expires_at": {"type": "string"},
                                             "csrf_token": {"type": "string"}}}}}},
                      "400": _ERROR, "401": _ERROR, "429": _ERROR}}}
    paths["/api/v1/admin/logout"] = {"post": {
        "operationId": "post_admin_logout", "summary": "End this session", "tags": ["session"],
        "responses": {"200": {"description": "logged out"}, "401": _ERROR, "403": _ERROR}}}
    paths[OPENAPI_PATH] = {"get": {
        "operationId": "get_openapi", "summary": "This document", "tags": ["meta"], "security": [],
        "responses": {"200": {"description": "OpenAPI 3.1", "content": {"application/json": {"schema": {}}}}}}}
    for route in admin_routes:
        paths.setdefault(route.path, {})[route.method.lower()] = _admin_operation(route)
    return {
        "openapi": "3.1.0",
        "info": {"title": "Majordomo gateway API", "version": __version__,
                 "description": "Usage reports and the admin API. Log in with POST /api/v1/admin/login and send "
                                "the token as Authorization: Bearer. docs/admin-api.md has examples."},
        "servers": [{"url": "/"}],
        "security": [{"bearer": []}, {"cookie": []}],
        "tags": [{"name": "usage"}, {"name": "admin"}, {"name": "session"}, {"name": "meta"}],
        "paths": dict(sorted(paths.items())),
        "components": {
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "description": "the token from login"},
                "cookie": {"type": "apiKey", "in": "cookie", "name": "majordomo_session"},
            },
            "schemas": {"Error": {"type": "object", "required": ["error"], "properties": {"error": {
                "type": "object", "required": ["code", "message"],
                "properties": {"code": {"type": "string"}, "message": {"type": "string"},
                               "field": {"type": "string", "description": "the input the error is about"}}}}}},
            "responses": {"Error": {"description": "what went wrong", "content": {
                "application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}},
        },
    }
