"""Spend and tokens grouped by any dimension: the query behind ``majordomo report``.

One statement per report, built for the database it runs on, over the raw rows of llm_requests
(rollups will answer the same question faster; they must give the same numbers).  Dimensions are
the metadata keys (``feature`` = Feature, ``step`` = Step, ``user`` = User-Id, ``session`` =
Session-Id, any other by the name the client sent, matched case-insensitively as the gateway
stores them) and the columns ``model``, ``provider``, ``route``, ``key`` (the Majordomo key's
name) and ``status``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Protocol

from majordomo_gateway.proxy.headers import canonical_name
from majordomo_gateway.storage.database import Connection, ReportStore
from majordomo_gateway.timebuckets import PERIODS, local_start, zone

#: the numbers of every report row, in output order
REPORT_COLUMNS: tuple[str, ...] = ("requests", "input_tokens", "output_tokens", "cached_tokens", "cache_write_tokens",
                                   "reasoning_tokens", "cost_usd", "unpriced", "errors", "aborted")
_AGGREGATES = (
    "COUNT(*) AS requests",
    "COALESCE(SUM(r.input_tokens), 0) AS input_tokens",
    "COALESCE(SUM(r.output_tokens), 0) AS output_tokens",
    "COALESCE(SUM(r.cached_tokens), 0) AS cached_tokens",
    "COALESCE(SUM(r.cache_creation_tokens), 0) AS cache_write_tokens",
    "COALESCE(SUM(r.reasoning_tokens), 0) AS reasoning_tokens",
    "SUM(r.total_cost) AS cost_usd",
    # Usage recorded but no price: the cost is NULL on purpose, never a silent $0.
    "SUM(CASE WHEN r.usage_source = 'reported' AND r.total_cost IS NULL THEN 1 ELSE 0 END) AS unpriced",
    "SUM(CASE WHEN r.status_code >= 400 THEN 1 ELSE 0 END) AS errors",
    "SUM(CASE WHEN r.aborted THEN 1 ELSE 0 END) AS aborted",
)
_METADATA_ALIASES = {"feature": "Feature", "step": "Step", "user": "User-Id", "session": "Session-Id"}
_COLUMN_DIMENSIONS = {"model": "r.model", "provider": "r.provider", "route": "r.route", "status": "r.status_code",
                      "key": "k.name"}
# Costs are NUMERIC(20, 10) on PostgreSQL; SQLite sums them as floats.  Both are shown to 1e-10.
_COST_QUANTUM = Decimal("1e-10")


class ReportError(ValueError):
    """A report that cannot be made as asked; the message says what would work."""


@dataclass(frozen=True, slots=True)
class Dimension:
    #: the name as the user gave it: the report's column name
    label: str
    #: "metadata" (raw_metadata ->> source) or "column" (source is an SQL expression)
    kind: str
    source: str


def dimension(name: str) -> Dimension:
    text = name.strip()
    if not text:
        raise ReportError("a dimension needs a name: feature, step, user, session, model, provider, route, key, "
                          "status, or a metadata key such as Team")
    lowered = text.lower()
    if lowered in _COLUMN_DIMENSIONS:
        return Dimension(text, "column", _COLUMN_DIMENSIONS[lowered])
    if lowered in _METADATA_ALIASES:
        return Dimension(text, "metadata", _METADATA_ALIASES[lowered])
    # The gateway stores metadata names canonically (x-majordomo-team -> Team), so this matches
    # whatever casing the client or the user typed.
    return Dimension(text, "metadata", canonical_name(lowered))


@dataclass(frozen=True, slots=True)
class UsageQuery:
    group_by: Sequence[Dimension] = ()
    since: datetime | None = None
    until: datetime | None = None
    every: str | None = None
    tz: str = "UTC"
    where: Sequence[tuple[Dimension, str]] = ()
    limit: int | None = None
    #: only the requests of keys this user owns (a member's view in the dashboard); None: every key
    owner_user_id: str | None = None

    def __post_init__(self) -> None:
        if self.every is not None and self.every not in PERIODS:
            raise ReportError(f"--every {self.every!r}: use one of {', '.join(PERIODS)}")
        zone(self.tz)
        if self.limit is not None and self.limit <= 0:
            raise ReportError("--limit must be a positive number of rows")
        if self.since and self.until and self.since >= self.until:
            raise ReportError("--since must be earlier than --until")
        for dim, value in self.where:
            if dim.source == "r.status_code" and not value.strip().isdigit():
                raise ReportError(f"--where {dim.label}={value!r}: a status is a number such as 200 or 429")
        labels = [d.label.lower() for d in self.group_by]
        duplicate = next((label for label in labels if labels.count(label) > 1), None)
        if duplicate is not None:
            raise ReportError(f"--group-by {duplicate} is given twice")


@dataclass(slots=True)
class UsageReport:
    #: output column names: the group-by labels, ``bucket`` with --every, then REPORT_COLUMNS
    columns: list[str]
    rows: list[dict[str, Any]]
    totals: dict[str, Any] = field(default_factory=dict)


class Statement:
    """SQL text and its parameters, numbered ($1) for PostgreSQL or positional (?) for SQLite."""

    def __init__(self, numbered: bool) -> None:
        self.numbered = numbered
        self.args: list[Any] = []

    def param(self, value: Any) -> str:
        self.args.append(value)
        return f"${len(self.args)}" if self.numbered else "?"


def expression(dim: Dimension, statement: Statement) -> str:
    if dim.kind == "column":
        return dim.source
    return f"(r.raw_metadata ->> {statement.param(dim.source)})"


def time_value(moment: datetime, postgres: bool) -> Any:
    # SQLite stores ISO text in UTC (storage/sqlite.py); compared as text, that orders correctly.
    return moment if postgres else moment.astimezone(UTC).isoformat()


def _bucket(query: UsageQuery, statement: Statement) -> str:
    every, tz = statement.param(query.every), statement.param(query.tz)
    if statement.numbered:
        return f"date_trunc({every}, r.requested_at AT TIME ZONE {tz}) AS bucket"
    return f"majordomo_bucket(r.requested_at, {every}, {tz}) AS bucket"


def filter_clauses(statement: Statement, *, since: datetime | None, until: datetime | None,
                   where: Sequence[tuple[Dimension, str]], owner_user_id: str | None) -> list[str]:
    """The WHERE conditions shared by reports and the request log (llm_requests is ``r``)."""
    postgres = statement.numbered
    clauses: list[str] = []
    if owner_user_id is not None:
        clauses.append(owner_condition(owner_user_id, statement))
    if since is not None:
        clauses.append(f"r.requested_at >= {statement.param(time_value(since, postgres))}")
    if until is not None:
        clauses.append(f"r.requested_at < {statement.param(time_value(until, postgres))}")
    for dim, value in where:
        if dim.source == "r.status_code":
            clauses.append(f"r.status_code = {statement.param(int(value))}")
        else:
            clauses.append(f"{expression(dim, statement)} = {statement.param(value)}")
    return clauses


def owner_condition(user_id: str, statement: Statement) -> str:
    """Rows of keys owned by ``user_id`` (compared as text: a mistyped id matches nothing)."""
    owner = "k2.owner_user_id::text" if statement.numbered else "k2.owner_user_id"
    return (f"r.majordomo_api_key_id IN (SELECT k2.id FROM api_keys k2 WHERE {owner} = "
            f"{statement.param(user_id)})")


def build_sql(query: UsageQuery, dialect: str) -> tuple[str, list[Any]]:
    """The statement and its arguments for ``dialect`` ("sqlite" or "postgres")."""
    statement = Statement(numbered=dialect == "postgres")
    selected = [_bucket(query, statement)] if query.every is not None else []
    selected += [f"{expression(dim, statement)} AS g{index}" for index, dim in enumerate(query.group_by)]
    groups = len(selected)
    selected.extend(_AGGREGATES)
    conditions = filter_clauses(statement, since=query.since, until=query.until, where=query.where,
                                owner_user_id=query.owner_user_id)
    uses_key = any(d.source == "k.name" for d in [*query.group_by, *(w for w, _ in query.where)])
    sql = "SELECT " + ", ".join(selected) + " FROM llm_requests r"
    if uses_key:
        sql += " LEFT JOIN api_keys k ON k.id = r.majordomo_api_key_id"
    if conditions:
        sql += " WHERE " + " AND ".join(conditions)
    if groups:
        sql += " GROUP BY " + ", ".join(str(i + 1) for i in range(groups))
    # Highest cost first (unpriced groups after priced ones); with --every, period by period.
    first_group = 1 if query.every is not None else 0
    order = ["1"] * first_group + ["SUM(r.total_cost) DESC NULLS LAST", "COUNT(*) DESC"]
    order += [str(i + 1) for i in range(first_group, groups)]
    sql += " ORDER BY " + ", ".join(order)
    if query.limit is not None:
        sql += f" LIMIT {statement.param(query.limit)}"
    return sql, statement.args


def _cost(value: Any) -> Decimal | None:
    if value is None:
        return None
    amount = value if isinstance(value, Decimal) else Decimal(repr(float(value)))
    return amount.quantize(_COST_QUANTUM)


def _row(raw: dict[str, Any], query: UsageQuery) -> dict[str, Any]:
    row: dict[str, Any] = {}
    for index, dim in enumerate(query.group_by):
        row[dim.label] = raw[f"g{index}"]
    if query.every is not None:
        bucket = raw["bucket"]
        row["bucket"] = local_start(bucket, query.tz) if isinstance(bucket, datetime) else bucket
    for name in REPORT_COLUMNS:
        row[name] = _cost(raw[name]) if name == "cost_usd" else int(raw[name] or 0)
    return row


def _totals(rows: list[dict[str, Any]]) -> dict[str, Any]:
    totals: dict[str, Any] = {name: sum(row[name] for row in rows) for name in REPORT_COLUMNS if name != "cost_usd"}
    costs = [row["cost_usd"] for row in rows if row["cost_usd"] is not None]
    totals["cost_usd"] = sum(costs, Decimal(0)) if costs else None
    return {name: totals[name] for name in REPORT_COLUMNS}


class ReportDatabase(Connection, ReportStore, Protocol):
    """What a report needs of a database: its dialect, and aggregate()."""


async def run_usage_report(database: ReportDatabase, query: UsageQuery) -> UsageReport:
    sql, args = build_sql(query, database.dialect)
    raw_rows = await database.aggregate(sql, args)
    if not query.group_by and not query.every and raw_rows and raw_rows[0]["requests"] == 0:
        raw_rows = []  # an ungrouped aggregate over no rows is one row of zeros: say "nothing" instead
    rows = [_row(raw, query) for raw in raw_rows]
    columns = [d.label for d in query.group_by] + (["bucket"] if query.every else []) + list(REPORT_COLUMNS)
    return UsageReport(columns, rows, _totals(rows))
