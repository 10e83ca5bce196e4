"""The request log: rows of llm_requests, newest first, filtered like a report, paged by keyset.

A page never uses OFFSET: the cursor is the (requested_at, id) of the last row shown, so page 1,000
costs what page 1 costs (an index range scan on llm_requests_requested_at) and rows written while
someone pages never shift or repeat.  Filters are the report's (``where`` on any dimension, a time
range, a member's own keys), plus ``status`` classes.
"""

from __future__ import annotations

import base64
import binascii
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import orjson

from majordomo_gateway.reports.usage import (
    Dimension,
    ReportDatabase,
    ReportError,
    Statement,
    filter_clauses,
    time_value,
)

MAX_PAGE = 500
DEFAULT_PAGE = 50
#: what ``status=`` accepts besides a number
STATUS_CLASSES = {"ok": "r.status_code < 400", "error": "r.status_code >= 400",
                  "2xx": "r.status_code BETWEEN 200 AND 299", "4xx": "r.status_code BETWEEN 400 AND 499",
                  "5xx": "r.status_code BETWEEN 500 AND 599"}

#: the columns of a row in the list, in output (and CSV) order
LIST_COLUMNS: tuple[str, ...] = (
    "id", "requested_at", "provider", "route", "model", "key", "status", "streamed", "aborted", "response_time_ms",
    "input_tokens", "output_tokens", "cached_tokens", "cache_write_tokens", "reasoning_tokens", "cost_usd",
    "usage_source", "metadata")
#: one request's detail adds these
DETAIL_COLUMNS: tuple[str, ...] = (
    *LIST_COLUMNS, "responded_at", "time_to_first_token_ms", "request_method", "request_path", "provider_api_key_alias",
    "cache_write_1h_tokens", "web_search_requests", "input_cost_usd", "output_cost_usd", "model_alias_found",
    "error_message", "key_id")

_LIST_SELECT = (
    "r.id, r.requested_at, r.provider, r.route, r.model, k.name AS key, r.status_code AS status, r.streamed, "
    "r.aborted, r.response_time_ms, r.input_tokens, r.output_tokens, r.cached_tokens, "
    "r.cache_creation_tokens AS cache_write_tokens, r.reasoning_tokens, r.total_cost AS cost_usd, r.usage_source, "
    "r.raw_metadata AS metadata")
_DETAIL_SELECT = _LIST_SELECT + (
    ", r.responded_at, r.time_to_first_token_ms, r.request_method, r.request_path, r.provider_api_key_alias, "
    "r.cache_creation_1h_tokens AS cache_write_1h_tokens, r.web_search_requests, r.input_cost AS input_cost_usd, "
    "r.output_cost AS output_cost_usd, r.model_alias_found, r.error_message, r.majordomo_api_key_id AS key_id")
_FROM = " FROM llm_requests r LEFT JOIN api_keys k ON k.id = r.majordomo_api_key_id"
_BOOLEANS = frozenset({"streamed", "aborted", "model_alias_found"})
_COSTS = frozenset({"cost_usd", "input_cost_usd", "output_cost_usd"})
_COST_QUANTUM = Decimal("1e-10")


@dataclass(frozen=True, slots=True)
class Cursor:
    """Where a page ends: the last row's time and id (ties in time broken by id, descending)."""

    requested_at: datetime
    id: str

    def encode(self) -> str:
        raw = orjson.dumps([self.requested_at.isoformat(), self.id])
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    @classmethod
    def decode(cls, text: str) -> Cursor:
        try:
            when, row_id = orjson.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
            moment = datetime.fromisoformat(when)
            if moment.tzinfo is None or not isinstance(row_id, str):
                raise ValueError
            return cls(moment, str(uuid.UUID(row_id)))
        except (ValueError, TypeError, binascii.Error, orjson.JSONDecodeError):
            raise ReportError("cursor: not one this server gave out (pass the `next` value back unchanged)") from None


@dataclass(frozen=True, slots=True)
class RequestQuery:
    since: datetime | None = None
    until: datetime | None = None
    where: Sequence[tuple[Dimension, str]] = ()
    #: a number (429) or a class: ok, error, 2xx, 4xx, 5xx
    status: str | None = None
    limit: int = DEFAULT_PAGE
    after: Cursor | None = None
    owner_user_id: str | None = None

    def __post_init__(self) -> None:
        if not 1 <= self.limit <= MAX_PAGE:
            raise ReportError(f"limit: between 1 and {MAX_PAGE} rows a page")
        if self.status is not None and not self.status.isdigit() and self.status.lower() not in STATUS_CLASSES:
            raise ReportError(f"status {self.status!r}: a number such as 429, or one of {', '.join(STATUS_CLASSES)}")
        if self.since and self.until and self.since >= self.until:
            raise ReportError("since must be earlier than until")
        for dim, value in self.where:
            if dim.source == "r.status_code" and not value.strip().isdigit():
                raise ReportError(f"where {dim.label}={value!r}: a status is a number such as 200 or 429")


@dataclass(slots=True)
class RequestPage:
    rows: list[dict[str, Any]]
    #: the cursor of the next (older) page, None on the last one
    next: str | None


def _clauses(query: RequestQuery, statement: Statement) -> list[str]:
    clauses = filter_clauses(statement, since=query.since, until=query.until, where=query.where,
                             owner_user_id=query.owner_user_id)
    if query.status is not None:
        status = query.status.lower()
        clauses.append(STATUS_CLASSES[status] if status in STATUS_CLASSES
                       else f"r.status_code = {statement.param(int(status))}")
    if query.after is not None:
        when = statement.param(time_value(query.after.requested_at, statement.numbered))
        row_id = statement.param(uuid.UUID(query.after.id) if statement.numbered else query.after.id)
        clauses.append(f"(r.requested_at, r.id) < ({when}, {row_id})")
    return clauses


def build_list_sql(query: RequestQuery, dialect: str) -> tuple[str, list[Any]]:
    statement = Statement(numbered=dialect == "postgres")
    clauses = _clauses(query, statement)
    sql = "SELECT " + _LIST_SELECT + _FROM
    if clauses:
        sql += " WHERE " + " AND ".join(clauses)
    # One more row than the page tells whether there is a next page without a COUNT(*).
    sql += f" ORDER BY r.requested_at DESC, r.id DESC LIMIT {statement.param(query.limit + 1)}"
    return sql, statement.args


def _time(value: Any) -> str | None:
    if value is None:
        return None
    moment = value if isinstance(value, datetime) else datetime.fromisoformat(value)
    return moment.astimezone(UTC).isoformat()


def _row(raw: dict[str, Any]) -> dict[str, Any]:
    row: dict[str, Any] = {}
    for name, value in raw.items():
        if name in ("requested_at", "responded_at"):
            row[name] = _time(value)
        elif name in _COSTS:
            row[name] = None if value is None else (
                value if isinstance(value, Decimal) else Decimal(repr(float(value)))).quantize(_COST_QUANTUM)
        elif name in _BOOLEANS:
            row[name] = bool(value)
        elif name == "metadata":
            row[name] = orjson.loads(value) if isinstance(value, str | bytes) else (value or {})
        elif name in ("id", "key_id") and value is not None:
            row[name] = str(value)  # PostgreSQL hands back uuid.UUID
        else:
            row[name] = value
    return row


async def list_requests(database: ReportDatabase, query: RequestQuery) -> RequestPage:
    sql, args = build_list_sql(query, database.dialect)
    raw = await database.aggregate(sql, args)
    rows = [_row(r) for r in raw[:query.limit]]
    following = None
    if len(raw) > query.limit:
        last = rows[-1]
        following = Cursor(datetime.fromisoformat(last["requested_at"]), last["id"]).encode()
    return RequestPage(rows, following)


async def get_request(database: ReportDatabase, request_id: str, *,
                      owner_user_id: str | None = None) -> dict[str, Any] | None:
    """One row with every column the dashboard shows; None when there is no such request (or, for a
    member, when it is not one of its keys': the same answer, so ids of others cannot be probed)."""
    try:
        parsed = uuid.UUID(request_id)
    except ValueError:
        return None
    statement = Statement(numbered=database.dialect == "postgres")
    clauses = [f"r.id = {statement.param(parsed if statement.numbered else str(parsed))}"]
    if owner_user_id is not None:
        clauses += filter_clauses(statement, since=None, until=None, where=(), owner_user_id=owner_user_id)
    raw = await database.aggregate("SELECT " + _DETAIL_SELECT + _FROM + " WHERE " + " AND ".join(clauses),
                                   statement.args)
    return _row(raw[0]) if raw else None
