"""The dashboard's JSON API: ``/api/v1/usage``, ``/api/v1/requests``, ``/api/v1/requests/{id}``,
``/api/v1/metadata-keys`` and ``/api/v1/overview`` (docs/dashboard.md).

Each is a thin reading of the query string into the same report objects ``majordomo report`` uses
(reports/), so the page, a script and the CLI get the same numbers.  Every route asks
``authenticate`` first and answers 401 without a valid login; a member's answers cover only the
keys it owns.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from majordomo_gateway.clock import Clock, utc_now
from majordomo_gateway.dashboard.auth import Authenticate, Principal
from majordomo_gateway.reports.metadata_keys import metadata_keys
from majordomo_gateway.reports.overview import OverviewQuery, auto_period, overview
from majordomo_gateway.reports.params import parse_where, time_range, usage_query
from majordomo_gateway.reports.requests import LIST_COLUMNS, Cursor, RequestQuery, get_request, list_requests
from majordomo_gateway.reports.usage import ReportDatabase, ReportError, dimension, run_usage_report
from majordomo_gateway.timebuckets import PERIODS

__all__ = ["api_routes"]

Handler = Callable[[Request, Principal], Awaitable[Response]]
_USAGE_PARAMS = frozenset({"group_by", "since", "until", "every", "where", "limit", "tz", "format"})
_REQUEST_PARAMS = frozenset({"since", "until", "where", "model", "provider", "key", "status", "limit", "cursor",
                             "tz", "format"})
_OVERVIEW_PARAMS = frozenset({"since", "until", "tz", "stack_by", "every", "where", "top"})
_KEYS_PARAMS = frozenset({"since", "until", "tz"})


def _json_default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return float(value)  # a JSON number, as `majordomo report --json` prints it
    raise TypeError(f"cannot encode {type(value).__name__}")


def json_response(body: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(body, default=_json_default), status, media_type="application/json",
                    headers={"cache-control": "no-store"})


def error_response(status: int, code: str, message: str) -> Response:
    return json_response({"error": {"code": code, "message": message}}, status)


def _csv_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, dict):
        return orjson.dumps(value).decode()
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def csv_response(columns: Sequence[str], rows: Sequence[dict[str, Any]], filename: str) -> Response:
    """The CLI's ``--csv``: a header row, then the rows; empty for NULL."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow([_csv_text(row.get(name)) for name in columns])
    return Response(out.getvalue(), media_type="text/csv; charset=utf-8",
                    headers={"content-disposition": f'attachment; filename="{filename}"', "cache-control": "no-store"})


def _one(request: Request, name: str) -> str | None:
    values = request.query_params.getlist(name)
    if len(values) > 1:
        raise ReportError(f"{name} is given {len(values)} times; it takes one value")
    return values[0] if values and values[0] != "" else None


def _number(request: Request, name: str) -> int | None:
    text = _one(request, name)
    if text is None:
        return None
    if not text.strip().isdigit():
        raise ReportError(f"{name}={text!r}: a positive whole number")
    return int(text)


def _check_names(request: Request, allowed: frozenset[str]) -> None:
    unknown = sorted(set(request.query_params.keys()) - allowed)
    if unknown:
        raise ReportError(f"unknown parameter {unknown[0]!r}: use {', '.join(sorted(allowed))}")


def _format(request: Request) -> str:
    value = (_one(request, "format") or "json").lower()
    if value not in ("json", "csv"):
        raise ReportError(f"format={value!r}: json or csv")
    return value


class Api:
    def __init__(self, database: ReportDatabase, authenticate: Authenticate, clock: Clock) -> None:
        self.database = database
        self.authenticate = authenticate
        self.clock = clock

    def guarded(self, handler: Handler) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            principal = await self.authenticate(request)
            if principal is None:
                return error_response(401, "unauthenticated",
                                      "log in first: POST /api/v1/admin/login, then send the token as "
                                      "Authorization: Bearer (or use the dashboard's login form)")
            try:
                return await handler(request, principal)
            except ValueError as exc:  # ReportError, TimeRangeError, TimeZoneError: the message says why
                return error_response(400, "invalid_parameter", str(exc))

        return endpoint

    async def usage(self, request: Request, principal: Principal) -> Response:
        _check_names(request, _USAGE_PARAMS)
        tz = _one(request, "tz") or "UTC"
        query = usage_query(group_by=request.query_params.getlist("group_by"), since=_one(request, "since"),
                            until=_one(request, "until"), every=_one(request, "every"), tz=tz,
                            where=request.query_params.getlist("where"), limit=_number(request, "limit"),
                            now=self.clock(), owner_user_id=principal.owner_scope, where_flag="where")
        output = _format(request)
        report = await run_usage_report(self.database, query)
        if output == "csv":
            return csv_response(report.columns, report.rows, "usage.csv")
        return json_response({"columns": report.columns, "rows": report.rows, "totals": report.totals,
                              "since": query.since.isoformat() if query.since else None,
                              "until": query.until.isoformat() if query.until else None, "tz": tz})

    async def requests(self, request: Request, principal: Principal) -> Response:
        _check_names(request, _REQUEST_PARAMS)
        tz = _one(request, "tz") or "UTC"
        since, until = _one(request, "since"), _one(request, "until")
        now = self.clock()
        span = time_range(since, until, tz=tz, now=now) if since or until else None
        where = parse_where(request.query_params.getlist("where"), "where")
        for column in ("model", "provider", "key"):
            value = _one(request, column)
            if value is not None:
                where.append((dimension(column), value))
        cursor = _one(request, "cursor")
        query = RequestQuery(since=span.since if span and since else None, until=span.until if span else None,
                             where=where, status=_one(request, "status"), limit=_number(request, "limit") or 50,
                             after=Cursor.decode(cursor) if cursor else None, owner_user_id=principal.owner_scope)
        output = _format(request)
        page = await list_requests(self.database, query)
        if output == "csv":
            return csv_response(LIST_COLUMNS, page.rows, "requests.csv")
        return json_response({"columns": list(LIST_COLUMNS), "rows": page.rows, "next": page.next})

    async def request_detail(self, request: Request, principal: Principal) -> Response:
        row = await get_request(self.database, request.path_params["request_id"],
                                owner_user_id=principal.owner_scope)
        if row is None:
            return error_response(404, "not_found", "no request with this id")
        return json_response(row)

    async def metadata_keys(self, request: Request, principal: Principal) -> Response:
        _check_names(request, _KEYS_PARAMS)
        span = time_range(_one(request, "since"), _one(request, "until"), tz=_one(request, "tz") or "UTC",
                          now=self.clock())
        keys = await metadata_keys(self.database, since=span.since, until=span.until,
                                   owner_user_id=principal.owner_scope)
        return json_response({"keys": [{"key": k.key, "requests": k.requests} for k in keys]})

    async def overview(self, request: Request, principal: Principal) -> Response:
        _check_names(request, _OVERVIEW_PARAMS)
        tz = _one(request, "tz") or "UTC"
        now = self.clock()
        span = time_range(_one(request, "since"), _one(request, "until"), tz=tz, now=now)
        until: datetime = span.until or now
        every = _one(request, "every") or auto_period(span.since, until)
        if every not in PERIODS:
            raise ReportError(f"every={every!r}: use one of {', '.join(PERIODS)}")
        if span.since >= until:
            raise ReportError("since must be earlier than until")
        query = OverviewQuery(since=span.since, until=until, stack_by=dimension(_one(request, "stack_by") or "feature"),
                              every=every, tz=tz, where=parse_where(request.query_params.getlist("where"), "where"),
                              top=_number(request, "top") or 10, owner_user_id=principal.owner_scope)
        body = await overview(self.database, query)
        body["user"] = {"email": principal.email, "role": principal.role}
        return json_response(body)


def api_routes(database: ReportDatabase, authenticate: Authenticate, clock: Clock = utc_now) -> list[Route]:
    api = Api(database, authenticate, clock)
    return [
        Route("/api/v1/usage", api.guarded(api.usage), methods=["GET"]),
        Route("/api/v1/requests", api.guarded(api.requests), methods=["GET"]),
        Route("/api/v1/requests/{request_id}", api.guarded(api.request_detail), methods=["GET"]),
        Route("/api/v1/metadata-keys", api.guarded(api.metadata_keys), methods=["GET"]),
        Route("/api/v1/overview", api.guarded(api.overview), methods=["GET"]),
    ]
