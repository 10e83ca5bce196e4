"""Budget alerts: when a counter's spend crosses one of its budget's ``--alert-at`` thresholds, a
JSON POST to the budget's ``--webhook``, once per threshold per period, never on the request path.

Every ``budgets.alert_interval`` each gateway process (one background task, see app.py):

1. reads the ledger (budget_spend: committed rows only) and inserts a budget_alerts row for every
   threshold a current-period counter has reached; the row's primary key (budget, value, period,
   threshold) makes the first insert win, so however many processes see the crossing it is one row;
2. claims the unsent rows that are due in one UPDATE (attempts + 1, next attempt = now + a lease),
   so exactly one process sends each; it POSTs, then marks the row sent, or failed with the next
   attempt after an exponential backoff (``alert_backoff`` x 2^(attempts - 1), at most an hour).
   A process that dies holding a claim leaves it to another once the lease has passed.

A budget without a webhook has its alerts logged (a warning line) and marked sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import orjson

from majordomo_gateway.budgets.status import redact_webhook
from majordomo_gateway.clock import Clock, utc_now
from majordomo_gateway.config import BudgetSettings
from majordomo_gateway.periods import next_start, period_start
from majordomo_gateway.storage.budgets import BudgetTable
from majordomo_gateway.storage.records import BudgetAlert, BudgetRecord, BudgetSpend

__all__ = ["AlertDeliverer", "alert_payload", "crossings", "post_json"]

log = logging.getLogger("majordomo.budgets.alerts")

#: a webhook that has not answered by then counts as failed
POST_TIMEOUT = 10.0
#: how long a claimed alert is this process's before another may try it (longer than a POST)
LEASE = timedelta(seconds=60)
MAX_BACKOFF = 3600.0
_ADJECTIVES = {"day": "daily", "week": "weekly", "month": "monthly", "total": "total"}

Poster = Callable[[str, bytes], Awaitable[None]]


def _scope(budget: BudgetRecord, value: str) -> str:
    return f"metadata:{budget.scope_key}={value}" if budget.per_value else budget.scope


def _usd(value: Decimal) -> str:
    return "$" + (f"{value:.6f}".rstrip("0").rstrip(".") or "0")


Crossing = tuple[str, str, datetime, int, Decimal]


def crossings(budgets: list[BudgetRecord], ledger: list[BudgetSpend], now: datetime) -> list[Crossing]:
    """(budget id, value, period start, threshold, spend) for every threshold a current-period
    counter has reached."""
    by_id = {b.id: b for b in budgets if b.alert_at}
    found: list[Crossing] = []
    for row in ledger:
        budget = by_id.get(row.budget_id)
        if budget is None or row.spent <= 0 or row.period_start != period_start(now, budget.period, budget.time_zone):
            continue
        found.extend((budget.id, row.scope_value, row.period_start, threshold, row.spent)
                     for threshold in budget.alert_at if row.spent * 100 >= budget.limit_usd * threshold)
    return found


def alert_payload(budget: BudgetRecord, alert: BudgetAlert) -> dict[str, Any]:
    """The webhook's JSON: the figures, and ``text`` for a Slack incoming webhook."""
    scope = _scope(budget, alert.scope_value)
    resets = next_start(alert.period_start, budget.period, budget.time_zone)
    percent = float(alert.spent * 100 / budget.limit_usd) if budget.limit_usd else 100.0
    kind = "soft" if budget.soft else "hard"
    text = (f"Majordomo budget alert: {scope} has spent {_usd(alert.spent)} of its {_usd(budget.limit_usd)} "
            f"{_ADJECTIVES[budget.period]} {kind} limit ({percent:.0f}%, threshold {alert.threshold}%); "
            + ("it never resets." if resets is None else f"it resets at {resets.isoformat()}."))
    return {"text": text, "scope": scope, "budget_id": budget.id, "budget_scope": budget.scope,
            "value": alert.scope_value if budget.per_value else None, "spend": float(alert.spent),
            "limit": float(budget.limit_usd), "period": budget.period, "period_start": alert.period_start.isoformat(),
            "resets_at": None if resets is None else resets.isoformat(), "threshold": alert.threshold,
            "percent": round(percent, 2), "soft": budget.soft, "time_zone": budget.time_zone}


async def post_json(url: str, body: bytes) -> None:
    """POST ``body``; an exception unless the answer is 2xx (urllib in a thread: a few per period)."""
    def send() -> None:
        request = urllib.request.Request(url, data=body, method="POST", headers={
            "Content-Type": "application/json", "User-Agent": "majordomo-budget-alerts"})
        with urllib.request.urlopen(request, timeout=POST_TIMEOUT) as response:
            response.read()

    await asyncio.to_thread(send)


def _describe(exc: BaseException) -> str:
    """What went wrong, without the URL (its path is the webhook's secret)."""
    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code} {exc.reason}"
    if isinstance(exc, urllib.error.URLError):
        return f"cannot connect: {exc.reason}"
    return f"{type(exc).__name__}: {exc}"


class AlertDeliverer:
    def __init__(self, table: BudgetTable, settings: BudgetSettings, clock: Clock = utc_now,
                 post: Poster = post_json) -> None:
        self.table = table
        self.settings = settings
        self.clock = clock
        self.post = post
        self._task: asyncio.Task[None] | None = None
        self._failing = False
        #: alerts this process delivered (for tests)
        self.sent = 0

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="majordomo-budget-alerts")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while True:
            try:
                await self.run_once()
                self._failing = False
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the database is away: alerts wait, requests do not
                if not self._failing:
                    log.error("budget alerts: cannot read or claim them (%s: %s); retrying",
                              type(exc).__name__, exc)
                self._failing = True
            await asyncio.sleep(self.settings.alert_interval)

    async def run_once(self) -> None:
        budgets = [b for b in await self.table.all() if b.alert_at]
        if not budgets:
            return
        now = self.clock()
        starts = [period_start(now, b.period, b.time_zone) for b in budgets]
        ledger = await self.table.spend_since(min(starts))
        await self.table.add_alerts(crossings(budgets, ledger, now), now=now)
        due = await self.table.claim_alerts(now=now, lease_until=now + LEASE)
        if due:
            by_id = {b.id: b for b in budgets}
            await asyncio.gather(*(self._deliver(by_id.get(alert.budget_id), alert) for alert in due))

    async def _deliver(self, budget: BudgetRecord | None, alert: BudgetAlert) -> None:
        if budget is None:  # its alerts were turned off meanwhile: nothing to say
            await self.table.alert_sent(alert, now=self.clock())
            return
        payload = alert_payload(budget, alert)
        if budget.webhook is None:
            log.warning("%s", payload["text"])
            await self.table.alert_sent(alert, now=self.clock())
            return
        try:
            await self.post(budget.webhook, orjson.dumps(payload))
        except Exception as exc:
            delay = min(MAX_BACKOFF, self.settings.alert_backoff * 2 ** (alert.attempts - 1))
            reason = _describe(exc)
            log.warning("budget alert for %s at %d%% not delivered to %s (attempt %d: %s); retrying in %.0f s",
                        payload["scope"], alert.threshold, redact_webhook(budget.webhook), alert.attempts, reason,
                        delay)
            await self.table.alert_failed(alert, error=reason, retry_at=self.clock() + timedelta(seconds=delay))
            return
        await self.table.alert_sent(alert, now=self.clock())
        self.sent += 1
        log.info("budget alert for %s at %d%% delivered to %s", payload["scope"], alert.threshold,
                 redact_webhook(budget.webhook))
