"""The budget and rate-limit tables, on either backend (docs/budgets.md).

Statements are written once (``:name`` parameters, rendered per dialect) as in storage/proxy_keys.py.
Two pieces of SQL are shared with the row writer: ``match_sql`` (does row ``r`` fall under budget
``b``) and ``counter_value_sql`` (which counter of the budget it adds to: the metadata value for
``metadata:<Key>=*``, else ''), so the spend a budget counts at creation (the current period's rows
already stored) and the spend the writer adds afterwards are the same rule.

Creating a budget counts the current period's rows in the same transaction, with the request log
locked against inserts (PostgreSQL: ``LOCK llm_requests IN SHARE MODE``; SQLite: ``BEGIN
IMMEDIATE``): a batch the writer commits before is counted by the backfill, a batch after sees the
budget and counts itself, none both.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from datetime import datetime
from decimal import Decimal
from typing import Any, Protocol

import orjson

from majordomo_gateway.periods import TOTAL_START
from majordomo_gateway.storage.columns import Dialect, NamedRow, Query, cost_value, render
from majordomo_gateway.storage.records import (
    BudgetAlert,
    BudgetHold,
    BudgetRecord,
    BudgetSpend,
    RateLimitRecord,
)

__all__ = ["BudgetTable", "Reservation", "Statement", "Then", "TransactionSource", "counter_value_sql", "match_sql",
           "period_sql"]

_BUDGET_COLUMNS = tuple(f.name for f in fields(BudgetRecord))
_LIMIT_COLUMNS = tuple(f.name for f in fields(RateLimitRecord))
_ALERT_COLUMNS = tuple(f.name for f in fields(BudgetAlert))
_TIMES = frozenset({"created_at", "updated_at", "period_start", "expires_at", "sent_at", "next_attempt_at",
                    "window_start"})
_IDS = frozenset({"id", "budget_id", "limit_id"})
_COSTS = frozenset({"limit_usd", "spent", "amount"})

Statement = tuple[Query, Sequence[Any]]
#: statements to run next in the same transaction, chosen from the rows of those run so far
Then = Callable[[list[list[NamedRow]]], Sequence[Statement]]


class TransactionSource(Protocol):
    """A backend: one statement, or several in one transaction (each one's rows, in order)."""

    async def rows(self, query: Query, args: Sequence[Any]) -> list[NamedRow]: ...

    async def atomically(self, statements: Sequence[Statement], *, lock_requests: bool = False,
                         then: Then | None = None) -> list[list[NamedRow]]:
        """``lock_requests``: hold off inserts into llm_requests until the transaction ends.
        ``then``: more statements, chosen from the results so far (it may run on another thread:
        it must only read what it is given)."""
        ...


def match_sql(dialect: Dialect, row: str = "r", budget: str = "b") -> str:
    """Whether request row ``row`` is covered by budget (or limit) ``budget``."""
    key_id = f"{row}.majordomo_api_key_id::text" if dialect.numbered_parameters else f"{row}.majordomo_api_key_id"
    meta = f"{row}.raw_metadata ->> {budget}.scope_key"
    return (f"({budget}.scope_kind = 'global' "
            f"OR ({budget}.scope_kind = 'key' AND {key_id} = {budget}.scope_value) "
            f"OR ({budget}.scope_kind = 'model' AND {row}.model = {budget}.scope_value) "
            f"OR ({budget}.scope_kind = 'metadata' AND {meta} = coalesce({budget}.scope_value, {meta})))")


def counter_value_sql(row: str = "r", budget: str = "b") -> str:
    return (f"CASE WHEN {budget}.scope_kind = 'metadata' AND {budget}.scope_value IS NULL "
            f"THEN {row}.raw_metadata ->> {budget}.scope_key ELSE '' END")


def period_sql(dialect: Dialect, row: str = "r", budget: str = "b") -> str:
    """The start of the budget's period that the row's requested_at falls in (periods.py)."""
    if dialect.numbered_parameters:
        return (f"CASE WHEN {budget}.period = 'total' THEN timestamptz '1970-01-01 00:00:00+00' "
                f"ELSE date_trunc({budget}.period, {row}.requested_at AT TIME ZONE {budget}.time_zone) "
                f"AT TIME ZONE {budget}.time_zone END")
    return f"majordomo_period_start({row}.requested_at, {budget}.period, {budget}.time_zone)"


def _decode(row: NamedRow, names: Sequence[str], dialect: Dialect) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for name in names:
        value = row[name]
        if name in _TIMES:
            value = dialect.decode_time(value)
        elif name in _IDS and value is not None:
            value = str(value)  # PostgreSQL hands back uuid.UUID
        elif name in _COSTS:
            value = cost_value(value)
        values[name] = value
    return values


def _budget(row: NamedRow, dialect: Dialect) -> BudgetRecord:
    values = _decode(row, _BUDGET_COLUMNS, dialect)
    values["soft"] = bool(values["soft"])
    values["alert_at"] = tuple(orjson.loads(values["alert_at"]))
    return BudgetRecord(**values)


def _limit(row: NamedRow, dialect: Dialect) -> RateLimitRecord:
    return RateLimitRecord(**_decode(row, _LIMIT_COLUMNS, dialect))


def _money(value: Decimal) -> Any:
    return str(value)


@dataclass(slots=True, frozen=True)
class Reservation:
    """One counter to reserve against exactly: this process's amount there already, the limit."""

    budget_id: str
    scope_value: str
    period_start: datetime
    own: Decimal
    limit: Decimal


class BudgetTable:
    def __init__(self, source: TransactionSource, dialect: Dialect, encode_time: Any) -> None:
        self._source = source
        self._dialect = dialect
        self._time = encode_time
        pg = dialect.numbered_parameters
        text = (lambda column: f"{column}::text") if pg else (lambda column: column)
        cols = ", ".join(_BUDGET_COLUMNS)
        numeric = "::numeric" if pg else ""
        self._create = self._render(
            f"INSERT INTO budgets ({cols}) VALUES (:id, :scope, :scope_kind, :scope_key, :scope_value, "
            f":limit_usd{numeric}, :period, :time_zone, :soft, :alert_at, :webhook, :now, :now) RETURNING {cols}")
        # The backfill: the current period's rows already stored, counted as the writer counts.
        start = ":start::timestamptz" if pg else ":start"
        self._backfill = self._render(
            "INSERT INTO budget_spend (budget_id, scope_value, period_start, spent, requests) "
            f"SELECT b.id, {counter_value_sql()} AS v, {start}, coalesce(sum(r.total_cost), 0), count(*) "
            f"FROM llm_requests r JOIN budgets b ON {match_sql(dialect)} "
            f"WHERE {text('b.id')} = :id AND r.requested_at >= {start} GROUP BY b.id, v")
        self._get = self._render(f"SELECT {cols} FROM budgets WHERE {text('id')} = :id")
        self._list = self._render(f"SELECT {cols} FROM budgets ORDER BY created_at, id")
        self._update = self._render(
            f"UPDATE budgets SET limit_usd = :limit_usd{numeric}, soft = :soft, alert_at = :alert_at, "
            f"webhook = :webhook, updated_at = :now WHERE {text('id')} = :id RETURNING {cols}")
        self._delete = self._render(f"DELETE FROM budgets WHERE {text('id')} = :id RETURNING {cols}")
        self._spend = self._render(
            "SELECT budget_id, scope_value, period_start, spent, requests FROM budget_spend "
            f"WHERE period_start >= {start} OR period_start = :total")
        self._spend_of = self._render(
            "SELECT budget_id, scope_value, period_start, spent, requests FROM budget_spend "
            f"WHERE {text('budget_id')} = :id AND period_start = {start} ORDER BY spent DESC, scope_value")
        self._reset_spend = self._render(
            f"DELETE FROM budget_spend WHERE {text('budget_id')} = :id AND period_start = {start} "
            "AND (:value IS NULL OR scope_value = :value) RETURNING scope_value" if not pg else
            f"DELETE FROM budget_spend WHERE budget_id::text = :id AND period_start = {start} "
            "AND (:value::text IS NULL OR scope_value = :value::text) RETURNING scope_value")
        self._reset_alerts = self._render(
            f"DELETE FROM budget_alerts WHERE {text('budget_id')} = :id AND period_start = {start} "
            + ("AND (:value IS NULL OR scope_value = :value)" if not pg
               else "AND (:value::text IS NULL OR scope_value = :value::text)"))
        self._version = self._render("SELECT version FROM budget_changes WHERE id = 1")
        # holds (the other processes' requests in flight)
        expires = ":expires::timestamptz" if pg else ":expires"
        self._put_hold = self._render(
            "INSERT INTO budget_holds (process_id, budget_id, scope_value, period_start, amount, expires_at) "
            f"VALUES (:process, :budget_id, :value, {start}, :amount{numeric}, {expires}) "
            "ON CONFLICT (process_id, budget_id, scope_value, period_start) DO UPDATE SET "
            "amount = excluded.amount, expires_at = excluded.expires_at")
        self._drop_holds = self._render("DELETE FROM budget_holds WHERE process_id = :process")
        self._drop_expired = self._render(f"DELETE FROM budget_holds WHERE expires_at < {expires}")
        self._holds = self._render(
            "SELECT process_id, budget_id, scope_value, period_start, amount, expires_at FROM budget_holds "
            f"WHERE process_id <> :process AND expires_at >= {expires}")
        # exact reservations: one counter's lock, then its ledger and the other processes' holds
        self._lock_counter = self._render("SELECT pg_advisory_xact_lock(hashtextextended(:key, 7680005))") \
            if pg else None
        self._counter_now = self._render(
            "SELECT coalesce((SELECT spent FROM budget_spend WHERE budget_id = :budget_id AND scope_value = :value "
            f"AND period_start = {start}), 0) AS ledger, coalesce((SELECT sum(amount) FROM budget_holds "
            f"WHERE budget_id = :budget_id AND scope_value = :value AND period_start = {start} "
            f"AND process_id <> :process AND expires_at >= {expires}), 0) AS others")
        # alerts
        alert_cols = ", ".join(_ALERT_COLUMNS)
        self._alerts = self._render(f"SELECT {alert_cols} FROM budget_alerts WHERE period_start >= {start} "
                                    "OR period_start = :total")
        now = ":now::timestamptz" if pg else ":now"
        lease = ":lease::timestamptz" if pg else ":lease"
        key = (f"{text('budget_id')} = :id AND scope_value = :value AND period_start = {start} "
               "AND threshold = :threshold")
        # One row per (counter, period, threshold): however many processes see the crossing, the
        # first insert wins and the others do nothing, so it is sent once.
        self._add_alert = self._render(
            f"INSERT INTO budget_alerts ({alert_cols}) VALUES (:id, :value, {start}, :threshold, :spent{numeric}, "
            f"{now}, NULL, 0, {now}, NULL) ON CONFLICT (budget_id, scope_value, period_start, threshold) DO NOTHING")
        # A claim is one UPDATE: on PostgreSQL a second claimer waits for the row lock, then finds
        # next_attempt_at moved past now and skips it; SQLite serialises writers.
        self._claim_alerts = self._render(
            f"UPDATE budget_alerts SET attempts = attempts + 1, next_attempt_at = {lease} "
            f"WHERE sent_at IS NULL AND next_attempt_at <= {now} RETURNING {alert_cols}")
        self._alert_sent = self._render(f"UPDATE budget_alerts SET sent_at = {now}, last_error = NULL WHERE {key}")
        self._alert_failed = self._render(
            f"UPDATE budget_alerts SET next_attempt_at = {lease}, last_error = :error WHERE {key}")
        # rate limits
        lcols = ", ".join(_LIMIT_COLUMNS)
        self._create_limit = self._render(
            f"INSERT INTO rate_limits ({lcols}) VALUES (:id, :scope, :scope_kind, :scope_key, :scope_value, "
            f":rpm, :tpm, :now, :now) RETURNING {lcols}")
        self._list_limits = self._render(f"SELECT {lcols} FROM rate_limits ORDER BY created_at, id")
        self._get_limit = self._render(f"SELECT {lcols} FROM rate_limits WHERE {text('id')} = :id")
        self._update_limit = self._render(
            f"UPDATE rate_limits SET rpm = :rpm, tpm = :tpm, updated_at = :now WHERE {text('id')} = :id "
            f"RETURNING {lcols}")
        self._delete_limit = self._render(f"DELETE FROM rate_limits WHERE {text('id')} = :id RETURNING {lcols}")
        window = ":window::timestamptz" if pg else ":window"
        self._add_usage = self._render(
            "INSERT INTO rate_usage (limit_id, scope_value, window_start, requests, tokens) "
            f"VALUES (:limit_id, :value, {window}, :requests, :tokens) "
            "ON CONFLICT (limit_id, scope_value, window_start) DO UPDATE SET "
            "requests = rate_usage.requests + excluded.requests, tokens = rate_usage.tokens + excluded.tokens")
        self._usage = self._render(
            f"SELECT limit_id, scope_value, window_start, requests, tokens FROM rate_usage "
            f"WHERE window_start >= {window}")
        self._drop_usage = self._render(f"DELETE FROM rate_usage WHERE window_start < {window}")

    def _render(self, template: str) -> Query:
        return render(template, self._dialect)

    def _args(self, query: Query, values: dict[str, Any]) -> tuple[Any, ...]:
        for name, value in values.items():
            if isinstance(value, datetime):
                values[name] = self._time(value)
        return query.args(**values)

    async def _run(self, query: Query, **values: Any) -> list[NamedRow]:
        return await self._source.rows(query, self._args(query, values))

    # -- budgets -------------------------------------------------------------------------------
    async def create(self, record: BudgetRecord, *, current_start: datetime) -> BudgetRecord:
        """Insert the budget and count the rows of its current period (from ``current_start``).
        ConstraintViolation when a budget with the same scope and period exists."""
        values = {"id": record.id, "scope": record.scope, "scope_kind": record.scope_kind,
                  "scope_key": record.scope_key, "scope_value": record.scope_value,
                  "limit_usd": _money(record.limit_usd), "period": record.period, "time_zone": record.time_zone,
                  "soft": record.soft, "alert_at": orjson.dumps(list(record.alert_at)).decode(),
                  "webhook": record.webhook, "now": record.created_at}
        [created, _] = await self._source.atomically(
            [(self._create, self._args(self._create, values)),
             (self._backfill, self._args(self._backfill, {"id": record.id, "start": current_start}))],
            lock_requests=True)
        return _budget(created[0], self._dialect)

    async def get(self, budget_id: str) -> BudgetRecord | None:
        rows = await self._run(self._get, id=budget_id)
        return _budget(rows[0], self._dialect) if rows else None

    async def all(self) -> list[BudgetRecord]:
        return [_budget(r, self._dialect) for r in await self._run(self._list)]

    async def update(self, budget_id: str, *, limit_usd: Decimal, soft: bool, alert_at: tuple[int, ...],
                     webhook: str | None, now: datetime) -> BudgetRecord | None:
        rows = await self._run(self._update, id=budget_id, limit_usd=_money(limit_usd), soft=soft,
                               alert_at=orjson.dumps(list(alert_at)).decode(), webhook=webhook, now=now)
        return _budget(rows[0], self._dialect) if rows else None

    async def delete(self, budget_id: str) -> BudgetRecord | None:
        rows = await self._run(self._delete, id=budget_id)
        return _budget(rows[0], self._dialect) if rows else None

    async def reset(self, budget_id: str, period_start: datetime, value: str | None = None) -> int:
        """Forget the spend (and the alerts sent) of the period starting ``period_start``; for a
        per-value budget, of one value or (None) all.  The counters removed."""
        args = {"id": budget_id, "start": period_start, "value": value}
        removed, _ = await self._source.atomically(
            [(self._reset_spend, self._args(self._reset_spend, dict(args))),
             (self._reset_alerts, self._args(self._reset_alerts, dict(args)))])
        return len(removed)

    async def version(self) -> int:
        """Bumped by every change to a budget or a rate limit (a trigger)."""
        [row] = await self._run(self._version)
        return int(row["version"])

    # -- the ledger ----------------------------------------------------------------------------
    async def spend_since(self, earliest_start: datetime) -> list[BudgetSpend]:
        """Counters of periods starting at or after ``earliest_start``, and of ``total`` budgets."""
        rows = await self._run(self._spend, start=earliest_start, total=self._time(TOTAL_START))
        return [BudgetSpend(**_decode(r, ("budget_id", "scope_value", "period_start", "spent", "requests"),
                                      self._dialect)) for r in rows]

    async def spend_of(self, budget_id: str, period_start: datetime) -> list[BudgetSpend]:
        """One budget's counters in one period, the largest first."""
        rows = await self._run(self._spend_of, id=budget_id, start=period_start)
        return [BudgetSpend(**_decode(r, ("budget_id", "scope_value", "period_start", "spent", "requests"),
                                      self._dialect)) for r in rows]

    # -- holds ---------------------------------------------------------------------------------
    async def publish_holds(self, process_id: str, holds: Sequence[BudgetHold], *, now: datetime) -> None:
        """Replace this process's holds with ``holds`` and drop everyone's expired ones."""
        statements: list[Statement] = [
            (self._drop_holds, self._args(self._drop_holds, {"process": process_id})),
            (self._drop_expired, self._args(self._drop_expired, {"expires": now}))]
        for hold in holds:
            statements.append((self._put_hold, self._args(self._put_hold, {
                "process": process_id, "budget_id": hold.budget_id, "value": hold.scope_value,
                "start": hold.period_start, "amount": _money(hold.amount), "expires": hold.expires_at})))
        await self._source.atomically(statements)

    async def holds_of_others(self, process_id: str, now: datetime) -> list[BudgetHold]:
        rows = await self._run(self._holds, process=process_id, expires=now)
        return [BudgetHold(**_decode(r, ("process_id", "budget_id", "scope_value", "period_start", "amount",
                                         "expires_at"), self._dialect)) for r in rows]

    async def reserve(self, process_id: str, items: Sequence[Reservation], amount: Decimal, *, now: datetime,
                      expires: datetime) -> tuple[bool, list[tuple[Decimal, Decimal]]]:
        """Add ``amount`` to this process's hold on each counter, in one transaction and under each
        counter's lock (PostgreSQL: an advisory lock per counter, taken in a fixed order; SQLite:
        the database's write lock), unless a counter's ledger + the other processes' holds + this
        process's ``own`` has reached its limit.  Whether it was added, and the (ledger, others) read
        for each item."""
        ordered = sorted(items, key=lambda r: (r.budget_id, r.scope_value, r.period_start))
        statements: list[Statement] = []
        if self._lock_counter is not None:
            statements += [(self._lock_counter, self._args(self._lock_counter, {
                "key": f"{r.budget_id}/{r.scope_value}/{r.period_start.isoformat()}"})) for r in ordered]
        locks = len(statements)
        statements += [(self._counter_now, self._args(self._counter_now, {
            "budget_id": r.budget_id, "value": r.scope_value, "start": r.period_start, "process": process_id,
            "expires": now})) for r in ordered]
        admitted: list[bool] = []

        def then(results: list[list[NamedRow]]) -> list[Statement]:
            seen = [cost_value(rows[0]["ledger"]) or Decimal(0) for rows in results[locks:]]
            others = [cost_value(rows[0]["others"]) or Decimal(0) for rows in results[locks:]]
            if any(ledger + other + r.own >= r.limit for ledger, other, r in zip(seen, others, ordered, strict=True)):
                return []
            admitted.append(True)
            return [(self._put_hold, self._args(self._put_hold, {
                "process": process_id, "budget_id": r.budget_id, "value": r.scope_value, "start": r.period_start,
                "amount": _money(r.own + amount), "expires": expires})) for r in ordered]

        results = await self._source.atomically(statements, then=then)
        read = results[locks:locks + len(ordered)]
        by_counter = {(r.budget_id, r.scope_value, r.period_start):
                      (cost_value(rows[0]["ledger"]) or Decimal(0), cost_value(rows[0]["others"]) or Decimal(0))
                      for r, rows in zip(ordered, read, strict=True)}
        return bool(admitted), [by_counter[(r.budget_id, r.scope_value, r.period_start)] for r in items]

    # -- alerts --------------------------------------------------------------------------------
    async def alerts_since(self, earliest_start: datetime) -> list[BudgetAlert]:
        rows = await self._run(self._alerts, start=earliest_start, total=self._time(TOTAL_START))
        return [BudgetAlert(**_decode(r, _ALERT_COLUMNS, self._dialect)) for r in rows]

    async def add_alerts(self, alerts: Sequence[tuple[str, str, datetime, int, Decimal]], *, now: datetime) -> None:
        """Record (budget id, value, period start, threshold, spend) crossings not recorded yet."""
        if not alerts:
            return
        await self._source.atomically([
            (self._add_alert, self._args(self._add_alert, {"id": budget_id, "value": value, "start": start,
                                                           "threshold": threshold, "spent": _money(spent),
                                                           "now": now}))
            for budget_id, value, start, threshold, spent in sorted(alerts)])

    async def claim_alerts(self, *, now: datetime, lease_until: datetime) -> list[BudgetAlert]:
        """The unsent alerts due now, each claimed by this caller until ``lease_until`` (another
        process takes it over then, if this one died before saying how it went)."""
        rows = await self._run(self._claim_alerts, now=now, lease=lease_until)
        return [BudgetAlert(**_decode(r, _ALERT_COLUMNS, self._dialect)) for r in rows]

    async def alert_sent(self, alert: BudgetAlert, *, now: datetime) -> None:
        await self._run(self._alert_sent, id=alert.budget_id, value=alert.scope_value, start=alert.period_start,
                        threshold=alert.threshold, now=now)

    async def alert_failed(self, alert: BudgetAlert, *, error: str, retry_at: datetime) -> None:
        await self._run(self._alert_failed, id=alert.budget_id, value=alert.scope_value, start=alert.period_start,
                        threshold=alert.threshold, lease=retry_at, error=error[:500])

    # -- rate limits ---------------------------------------------------------------------------
    async def create_limit(self, record: RateLimitRecord) -> RateLimitRecord:
        """ConstraintViolation when the scope has a limit already (update it instead)."""
        rows = await self._run(self._create_limit, id=record.id, scope=record.scope, scope_kind=record.scope_kind,
                               scope_key=record.scope_key, scope_value=record.scope_value, rpm=record.rpm,
                               tpm=record.tpm, now=record.created_at)
        return _limit(rows[0], self._dialect)

    async def limits(self) -> list[RateLimitRecord]:
        return [_limit(r, self._dialect) for r in await self._run(self._list_limits)]

    async def get_limit(self, limit_id: str) -> RateLimitRecord | None:
        rows = await self._run(self._get_limit, id=limit_id)
        return _limit(rows[0], self._dialect) if rows else None

    async def update_limit(self, limit_id: str, *, rpm: int | None, tpm: int | None,
                           now: datetime) -> RateLimitRecord | None:
        rows = await self._run(self._update_limit, id=limit_id, rpm=rpm, tpm=tpm, now=now)
        return _limit(rows[0], self._dialect) if rows else None

    async def delete_limit(self, limit_id: str) -> RateLimitRecord | None:
        rows = await self._run(self._delete_limit, id=limit_id)
        return _limit(rows[0], self._dialect) if rows else None

    async def add_rate_usage(self, usage: Sequence[tuple[str, str, datetime, int, int]], *,
                             older_than: datetime) -> None:
        """Add (limit id, value, window start, requests, tokens) to the shared counters; drop windows
        that started before ``older_than``."""
        statements: list[Statement] = [
            (self._add_usage, self._args(self._add_usage, {"limit_id": limit_id, "value": value, "window": window,
                                                           "requests": requests, "tokens": tokens}))
            for limit_id, value, window, requests, tokens in sorted(usage)]
        statements.append((self._drop_usage, self._args(self._drop_usage, {"window": older_than})))
        await self._source.atomically(statements)

    async def rate_usage_since(self, window_start: datetime) -> list[tuple[str, str, datetime, int, int]]:
        rows = await self._run(self._usage, window=window_start)
        decode = self._dialect.decode_time
        return [(str(r["limit_id"]), r["scope_value"], decode(r["window_start"]),  # type: ignore[misc]
                 int(r["requests"]), int(r["tokens"])) for r in rows]
