"""The request path's side of budgets and rate limits: an in-memory view, checked without a query.

Each process keeps, per counter (a budget's period, or one value's, for ``metadata:<Key>=*``):

- ``ledger``: the spend the database holds (budget_spend), read every ``budgets.refresh_interval``;
- ``others``: what other processes have admitted and not yet written (budget_holds), read likewise;
- ``reserved``: its own requests in flight, each holding an estimate (input size and max_tokens,
  priced) from admission until its cost is known;
- ``pending``: its own finished requests' costs, until a ledger read that started after the writer
  committed their rows (so a cost is never missing in between, nor counted twice here).

A hard budget refuses a request when ``ledger + others + reserved + pending`` has reached the
limit.  Its own requests are seen at once; other processes' once both have refreshed (each
publishes ``reserved + pending`` as its hold on every refresh): that lag is what bounds how far
processes together can overshoot (docs/budgets.md states the rule).

Rate limits count requests (at admission) and tokens (when the usage is known) per fixed UTC
minute; each process adds what it counted to rate_usage on every refresh and reads the totals back.

With no budget and no limit defined, ``active`` is False and a request pays one attribute test;
the refresh is then one read of budget_changes.version per interval.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import re
import socket
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal

from majordomo_gateway.budgets.index import ScopeIndex
from majordomo_gateway.clock import Clock, utc_now
from majordomo_gateway.config import BudgetSettings
from majordomo_gateway.periods import next_start, period_start
from majordomo_gateway.pricing import PriceBook
from majordomo_gateway.proxy.errors import GatewayError
from majordomo_gateway.proxy.exchange import Exchange
from majordomo_gateway.storage.budgets import BudgetTable, Reservation
from majordomo_gateway.storage.records import BudgetHold, BudgetRecord, BudgetSpend, RateLimitRecord, RequestRecord
from majordomo_gateway.usage import Usage

__all__ = ["BudgetGuard", "Counter", "RateCounter"]

log = logging.getLogger("majordomo.budgets")

ZERO = Decimal(0)
#: a dead process's holds stop counting after this (a live one renews them on every refresh)
HOLD_TTL = timedelta(seconds=10)
#: a finished request's cost is forgotten after this even if no commit was seen (its insert timed
#: out and may have committed); by then its row is in the ledger or in the spool
PENDING_MAX_AGE = 600.0
#: rough bytes per input token, to estimate a request's input from its body's size
BYTES_PER_TOKEN = 4
_MAX_TOKENS = re.compile(rb'"(?:max_tokens|max_output_tokens|max_completion_tokens|maxOutputTokens)"\s*:\s*(\d+)')
_MINUTE = timedelta(minutes=1)
_ADJECTIVES = {"day": "daily", "week": "weekly", "month": "monthly", "total": "total"}


@dataclass(slots=True, eq=False)
class Counter:
    budget: BudgetRecord
    value: str
    start: datetime
    resets_at: datetime | None
    ledger: Decimal = ZERO
    others: Decimal = ZERO
    reserved: Decimal = ZERO
    pending: Decimal = ZERO
    #: estimates admitted from the view (not through the database) since the last publication
    local: Decimal = ZERO

    def seen(self) -> Decimal:
        return self.ledger + self.others + self.reserved + self.pending

    @property
    def scope(self) -> str:
        b = self.budget
        return f"metadata:{b.scope_key}={self.value}" if b.per_value else b.scope


@dataclass(slots=True, eq=False)
class RateCounter:
    limit: RateLimitRecord
    value: str
    window: datetime
    #: the totals rate_usage held at the last read (every process's)
    shared_requests: int = 0
    shared_tokens: int = 0
    #: counted here and not yet added to rate_usage (``sending``: being added right now)
    local_requests: int = 0
    local_tokens: int = 0
    sending_requests: int = 0
    sending_tokens: int = 0

    def requests(self) -> int:
        return self.shared_requests + self.local_requests + self.sending_requests

    def tokens(self) -> int:
        return self.shared_tokens + self.local_tokens + self.sending_tokens


@dataclass(slots=True, eq=False)
class Hold:
    """What one admitted request holds until it is settled."""

    counters: list[Counter]
    amount: Decimal
    rates: list[tuple[RateLimitRecord, str]] = field(default_factory=list)


@dataclass(slots=True, eq=False)
class _Pending:
    counters: list[Counter]
    amount: Decimal
    since: float
    #: the refresh under way when the writer committed the row (None: not committed yet)
    committed_during: int | None = None


def _minute(moment: datetime) -> datetime:
    return moment.replace(second=0, microsecond=0)


def _usd(value: Decimal) -> str:
    text = f"{value:.10f}".rstrip("0").rstrip(".")
    return f"${text}"


class BudgetGuard:
    def __init__(self, table: BudgetTable, prices: PriceBook, settings: BudgetSettings,
                 clock: Clock = utc_now, process_id: str | None = None) -> None:
        self.table = table
        self.prices = prices
        self.settings = settings
        self.clock = clock
        self.process_id = process_id or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        #: any budget or limit defined: when False the request path skips everything here
        self.active = False
        self.budgets: ScopeIndex[BudgetRecord] = ScopeIndex(())
        self.limits: ScopeIndex[RateLimitRecord] = ScopeIndex(())
        self._budget_list: list[BudgetRecord] = []
        self._periods: dict[str, tuple[datetime, datetime | None]] = {}
        self.counters: dict[tuple[str, str, datetime], Counter] = {}
        self.rates: dict[tuple[str, str, datetime], RateCounter] = {}
        self._pending: dict[str, _Pending] = {}
        self._version: int | None = None
        self._refreshes = 0
        self._published = False
        self._task: asyncio.Task[None] | None = None
        self._failing = False
        self._exact_failing = False
        #: gateway processes sharing the budgets (this one and those with live holds), as last read
        self.processes = 1
        #: exact reservations and the publication of this process's holds, one at a time (so a
        #: publication never overwrites a reservation made meanwhile with an older amount)
        self._exact_lock = asyncio.Lock()
        #: admissions through the database, and from the view (for tests and docs/budgets.md)
        self.exact_admissions = 0
        self.local_admissions = 0

    # -- lifecycle -----------------------------------------------------------------------------
    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="majordomo-budgets")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._published:
            with contextlib.suppress(Exception):
                await self.table.publish_holds(self.process_id, [], now=self.clock())

    async def _run(self) -> None:
        interval = self.settings.refresh_interval
        while True:
            try:
                await self.refresh()
                if self._failing:
                    log.warning("budgets: the database answers again; ledger and limits refreshed")
                self._failing = False
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the database is away: keep the last view, try again
                if not self._failing:
                    log.error("budgets: cannot refresh from the database (%s: %s); enforcing the last view",
                              type(exc).__name__, exc)
                self._failing = True
            await asyncio.sleep(interval)

    # -- refresh -------------------------------------------------------------------------------
    async def refresh(self) -> None:
        self._refreshes += 1
        this = self._refreshes
        version = await self.table.version()
        if version != self._version:
            budgets, limits = await self.table.all(), await self.table.limits()
            self._load(budgets, limits)
            self._version = version
        now = self.clock()
        if self._budget_list:
            await self._refresh_budgets(now, this)
        elif self._published:
            await self.table.publish_holds(self.process_id, [], now=now)
            self._published = False
        if self.limits.size:
            await self._refresh_rates(now)

    def _load(self, budgets: list[BudgetRecord], limits: list[RateLimitRecord]) -> None:
        self._budget_list = budgets
        self.budgets = ScopeIndex(budgets)
        self.limits = ScopeIndex(limits)
        by_id = {b.id: b for b in budgets}
        self._periods.clear()  # computed afresh for what may have changed
        # Counters keep their own in-flight amounts; a changed limit or softness is read from the
        # record, so each counter gets the current one.
        for key, counter in list(self.counters.items()):
            current = by_id.get(key[0])
            if current is None:
                del self.counters[key]
            else:
                counter.budget = current
        limit_ids = {x.id: x for x in limits}
        for key, rate in list(self.rates.items()):
            if key[0] not in limit_ids:
                del self.rates[key]
            else:
                rate.limit = limit_ids[key[0]]
        self.active = bool(budgets or limits)

    async def _refresh_budgets(self, now: datetime, this: int) -> None:
        starts = {b.id: self._period(b, now)[0] for b in self._budget_list}
        await self._publish(now, starts)
        ledger = await self.table.spend_since(min(starts.values()))
        others = await self.table.holds_of_others(self.process_id, now)
        self._apply(now, this, starts, ledger, others)

    async def _publish(self, now: datetime, starts: dict[str, datetime]) -> None:
        """This process's holds: what it has in flight and finished but not yet in the ledger."""
        async with self._exact_lock:
            published = {c: c.local for c in self.counters.values()}
            holds = [BudgetHold(self.process_id, c.budget.id, c.value, c.start, c.reserved + c.pending,
                                now + HOLD_TTL) for c in self.counters.values() if c.reserved + c.pending > 0]
            # Always one row, so the others count this process (budgets.exact_share's allowance).
            first = self._budget_list[0]
            start = starts[first.id]
            if not any(h.budget_id == first.id and h.scope_value == "" and h.period_start == start for h in holds):
                holds.append(BudgetHold(self.process_id, first.id, "", start, ZERO, now + HOLD_TTL))
            await self.table.publish_holds(self.process_id, holds, now=now)
            self._published = True
            for counter, amount in published.items():
                counter.local -= amount

    def _apply(self, now: datetime, this: int, starts: dict[str, datetime], ledger: list[BudgetSpend],
               others: list[BudgetHold]) -> None:
        # No await in here: requests see the old view or the new one, never a mix.
        by_id = {b.id: b for b in self._budget_list}
        for counter in self.counters.values():
            counter.ledger = ZERO
            counter.others = ZERO
        for row in ledger:
            budget = by_id.get(row.budget_id)
            if budget is not None and row.period_start == starts[budget.id]:
                self._counter(budget, row.scope_value, now).ledger = row.spent
        self.processes = 1 + len({hold.process_id for hold in others})
        for hold in others:
            budget = by_id.get(hold.budget_id)
            if budget is not None and hold.period_start == starts[budget.id]:
                self._counter(budget, hold.scope_value, now).others += hold.amount
        oldest = time.monotonic() - PENDING_MAX_AGE
        for record_id, item in list(self._pending.items()):
            if (item.committed_during is not None and item.committed_during < this) or item.since < oldest:
                for counter in item.counters:
                    counter.pending -= item.amount
                del self._pending[record_id]
        for key, counter in list(self.counters.items()):
            if counter.start != starts[counter.budget.id] and not counter.reserved and not counter.pending:
                del self.counters[key]  # a period that ended

    async def _refresh_rates(self, now: datetime) -> None:
        window = _minute(now)
        batch = []
        for rate in self.rates.values():
            if rate.local_requests or rate.local_tokens:
                batch.append((rate.limit.id, rate.value, rate.window, rate.local_requests, rate.local_tokens))
                rate.sending_requests, rate.sending_tokens = rate.local_requests, rate.local_tokens
                rate.local_requests = rate.local_tokens = 0
        try:
            await self.table.add_rate_usage(batch, older_than=window - 2 * _MINUTE)
            rows = await self.table.rate_usage_since(window)
        except BaseException:
            for rate in self.rates.values():  # not added: counted again next time
                rate.local_requests += rate.sending_requests
                rate.local_tokens += rate.sending_tokens
                rate.sending_requests = rate.sending_tokens = 0
            raise
        for rate in self.rates.values():
            rate.shared_requests = rate.shared_tokens = 0
            rate.sending_requests = rate.sending_tokens = 0
        limits = {x.id: x for x in self._limit_list()}
        for limit_id, value, start, requests, tokens in rows:
            limit = limits.get(limit_id)
            if limit is not None and start == window:
                rate = self._rate(limit, value, window)
                rate.shared_requests, rate.shared_tokens = requests, tokens
        for key, rate in list(self.rates.items()):
            if rate.window < window and not rate.local_requests and not rate.local_tokens:
                del self.rates[key]

    def _limit_list(self) -> list[RateLimitRecord]:
        index = self.limits
        found: list[RateLimitRecord] = [*index.everything]
        for group in (index.by_key, index.by_model, index.per_value):
            for items in group.values():
                found.extend(items)
        for values in index.by_metadata.values():
            for items in values.values():
                found.extend(items)
        return found

    # -- counters ------------------------------------------------------------------------------
    def _period(self, budget: BudgetRecord, now: datetime) -> tuple[datetime, datetime | None]:
        cached = self._periods.get(budget.id)
        if cached is not None and (cached[1] is None or now < cached[1]) and now >= cached[0]:
            return cached
        start = period_start(now, budget.period, budget.time_zone)
        period = (start, next_start(start, budget.period, budget.time_zone))
        self._periods[budget.id] = period
        return period

    def _counter(self, budget: BudgetRecord, value: str, now: datetime) -> Counter:
        start, resets_at = self._period(budget, now)
        key = (budget.id, value, start)
        counter = self.counters.get(key)
        if counter is None:
            counter = self.counters[key] = Counter(budget, value, start, resets_at)
        return counter

    def _rate(self, limit: RateLimitRecord, value: str, window: datetime) -> RateCounter:
        key = (limit.id, value, window)
        rate = self.rates.get(key)
        if rate is None:
            rate = self.rates[key] = RateCounter(limit, value, window)
        return rate

    # -- what each budget stands at (Prometheus gauges, metrics/budgets.py) ----------------------
    def standing(self) -> list[tuple[BudgetRecord, str, Decimal]]:
        """(budget, value, spent this period) for every budget: the ledger's spend plus what this
        process settled since; ``value`` is "" but for ``metadata:<Key>=*`` budgets (one per value
        seen, none before the first)."""
        now = self.clock()
        found: list[tuple[BudgetRecord, str, Decimal]] = []
        current: dict[str, list[Counter]] = {}
        for counter in self.counters.values():
            current.setdefault(counter.budget.id, []).append(counter)
        for budget in self._budget_list:
            start = self._period(budget, now)[0]
            counters = [c for c in current.get(budget.id, ()) if c.start == start]
            if not counters and not budget.per_value:
                found.append((budget, "", ZERO))
            found.extend((budget, c.value if budget.per_value else "", c.ledger + c.pending) for c in counters)
        return found

    # -- the request path ----------------------------------------------------------------------
    async def admit(self, ex: Exchange) -> None:
        """Refuse (GatewayError 429) a request a used-up hard budget or a rate limit covers; else
        hold its estimate against its hard budgets and count it against its limits."""
        record = ex.record
        assert record is not None
        key_id, model, metadata = record.majordomo_api_key_id, record.model, record.raw_metadata
        budgets = self.budgets.match(key_id, model, metadata) if self.budgets.size else ()
        limits = self.limits.match(key_id, model, metadata) if self.limits.size else ()
        if not budgets and not limits:
            return
        now = ex.requested_at
        hard = self._hard_budgets(budgets, now) if budgets else []
        rates = self._rates_for(limits, now) if limits else []
        amount = ZERO
        if hard:
            amount = self.estimate(ex)
            exact = [counter for counter in hard if not self._from_view(counter, amount)]
            if exact:
                await self._reserve_exactly(exact, amount, now)
                self.exact_admissions += 1
            else:
                self.local_admissions += 1
            for counter in hard:
                if counter not in exact:  # (the exact ones were held under the lock)
                    counter.reserved += amount
                    counter.local += amount
        for rate in rates:
            rate.local_requests += 1
        ex.budget_hold = Hold(hard, amount, [(rate.limit, rate.value) for rate in rates])

    def _hard_budgets(self, budgets: Sequence[tuple[BudgetRecord, str]], now: datetime) -> list[Counter]:
        """The request's hard budgets' counters; GatewayError when one is used up."""
        hard: list[Counter] = []
        for budget, value in budgets:
            if budget.soft:
                continue
            counter = self._counter(budget, value, now)
            if counter.seen() >= budget.limit_usd:
                raise _exceeded(counter)
            hard.append(counter)
        return hard

    def _rates_for(self, limits: Sequence[tuple[RateLimitRecord, str]], now: datetime) -> list[RateCounter]:
        """The request's rate counters; GatewayError when one is at its limit."""
        rates: list[RateCounter] = []
        window = _minute(now)
        for limit, value in limits:
            rate = self._rate(limit, value, window)
            if limit.rpm is not None and rate.requests() >= limit.rpm:
                raise _rate_limited(rate, "requests", limit.rpm, now)
            if limit.tpm is not None and rate.tokens() >= limit.tpm:
                raise _rate_limited(rate, "tokens", limit.tpm, now)
            rates.append(rate)
        return rates

    def _from_view(self, counter: Counter, amount: Decimal) -> bool:
        """Whether the view may admit against this counter, or the database must (the last
        ``exact_share`` of the limit, or more admitted here since the last publication than this
        process's share of that margin)."""
        share = self.settings.exact_share
        if share <= 0:
            return True
        limit = counter.budget.limit_usd
        margin = limit * Decimal(str(share))
        if limit - counter.seen() - amount < margin:
            return False
        return counter.local + amount <= margin / self.processes

    async def _reserve_exactly(self, counters: list[Counter], amount: Decimal, now: datetime) -> None:
        async with self._exact_lock:
            # Inside the lock: this process's amounts include every reservation made before.
            items = [Reservation(c.budget.id, c.value, c.start, c.reserved + c.pending, c.budget.limit_usd)
                     for c in counters]
            try:
                admitted, read = await self.table.reserve(self.process_id, items, amount, now=now,
                                                          expires=now + HOLD_TTL)
            except Exception as exc:  # the database is away: the view decides (it did: below the limit)
                if not self._exact_failing:
                    log.error("budgets: cannot reserve in the database (%s: %s); admitting from the view",
                              type(exc).__name__, exc)
                self._exact_failing = True
                return
            self._exact_failing = False
            for counter, (ledger, others) in zip(counters, read, strict=True):
                # Fresher than the view; the next refresh replaces them again.
                counter.ledger, counter.others = max(counter.ledger, ledger), others
            if not admitted:
                refused = next((c for c in counters if c.seen() >= c.budget.limit_usd), counters[0])
                raise _exceeded(refused)
            for counter in counters:
                counter.reserved += amount
            self._published = True

    def estimate(self, ex: Exchange) -> Decimal:
        """A request's cost before it is sent: its input as body bytes / 4 tokens, its output as
        max_tokens (or budgets.default_output_tokens), at the model's prices; 0 when unpriced."""
        record = ex.record
        assert record is not None
        body = ex.body
        found = _MAX_TOKENS.search(body) if body else None
        output = int(found.group(1)) if found else self.settings.default_output_tokens
        usage = Usage(input_tokens=len(body) // BYTES_PER_TOKEN, output_tokens=output)
        try:
            cost = self.prices.price(record.provider, record.model, usage, when=record.requested_at).total_cost
        except Exception:  # pricing must never fail a request
            log.exception("budgets: estimating %s/%s failed", record.provider, record.model)
            return ZERO
        return cost if cost is not None and cost > 0 else ZERO

    def settle(self, ex: Exchange) -> None:
        """The request's row is final (priced): its hold becomes its real cost, pending until the
        ledger has it; its tokens count against its rate limits."""
        hold, record = ex.budget_hold, ex.record
        assert isinstance(hold, Hold) and record is not None
        ex.budget_hold = None
        actual = record.total_cost if record.total_cost is not None and record.total_cost > 0 else ZERO
        for counter in hold.counters:
            counter.reserved -= hold.amount
            counter.pending += actual
        if hold.counters and actual:
            self._pending[record.id] = _Pending(hold.counters, actual, time.monotonic())
        tokens = record.input_tokens + record.output_tokens
        if hold.rates and tokens:
            window = _minute(self.clock())
            for limit, value in hold.rates:
                self._rate(limit, value, window).local_tokens += tokens

    def committed(self, records: Sequence[RequestRecord]) -> None:
        """The writer committed these rows (and so their spend to the ledger)."""
        pending = self._pending
        if not pending:
            return
        during = self._refreshes
        for record in records:
            item = pending.get(record.id)
            if item is not None and item.committed_during is None:
                item.committed_during = during


def _exceeded(counter: Counter) -> GatewayError:
    budget = counter.budget
    resets = "never (a total budget)" if counter.resets_at is None else counter.resets_at.isoformat()
    spent = counter.seen()
    message = (f"Budget exceeded: {counter.scope} has spent {_usd(spent)} of its {_usd(budget.limit_usd)} "
               f"{_ADJECTIVES[budget.period]} limit (budget {budget.id}); "
               f"it resets at {resets}.")
    details: dict[str, object] = {"scope": counter.scope, "budget_id": budget.id,
                                  "limit_usd": float(budget.limit_usd), "spent_usd": float(spent),
                                  "period": budget.period,
                                  "resets_at": None if counter.resets_at is None else counter.resets_at.isoformat()}
    return GatewayError(429, "budget_exceeded", message,
                        record_message=f"budget exceeded: {counter.scope} spent {_usd(spent)} of "
                                       f"{_usd(budget.limit_usd)} per {budget.period}, resets {resets}",
                        details=details, should_retry=False)


def _rate_limited(rate: RateCounter, what: str, limit: int, now: datetime) -> GatewayError:
    scope = f"metadata:{rate.limit.scope_key}={rate.value}" if rate.limit.per_value else rate.limit.scope
    retry_after = max(1, math.ceil((rate.window + _MINUTE - now).total_seconds()))
    used = rate.requests() if what == "requests" else rate.tokens()
    message = (f"Rate limit exceeded: {scope} has used {used} of its {limit} {what} per minute "
               f"(limit {rate.limit.id}). Retry in {retry_after} s.")
    return GatewayError(429, "rate_limit_exceeded", message,
                        record_message=f"rate limited: {scope} at {used} of {limit} {what} per minute",
                        retry_after=retry_after,
                        details={"scope": scope, "limit_id": rate.limit.id,
                                 "rpm" if what == "requests" else "tpm": limit})
