"""Where each budget stands now: its spend this period, what remains, when it resets, the alerts
sent.  What ``majordomo budgets list/show`` print and the admin API returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from urllib.parse import urlsplit

from majordomo_gateway.periods import next_start, period_start
from majordomo_gateway.storage.budgets import BudgetTable
from majordomo_gateway.storage.records import BudgetRecord, BudgetSpend

__all__ = ["BudgetStatus", "ValueSpend", "budget_statuses", "redact_webhook"]

ZERO = Decimal(0)


def redact_webhook(url: str | None) -> str | None:
    """A webhook's scheme and host only: Slack-style URLs carry their secret in the path."""
    if url is None:
        return None
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc.rsplit('@', 1)[-1]}/…"


def _number(value: Decimal) -> float:
    return float(value)  # a JSON number; costs have 10 decimal places, well within a double


@dataclass(slots=True)
class ValueSpend:
    """One counter of a ``metadata:<Key>=*`` budget: one value of the key."""

    value: str
    spent: Decimal
    requests: int
    remaining: Decimal

    def to_dict(self) -> dict[str, object]:
        return {"value": self.value, "spent": _number(self.spent), "requests": self.requests,
                "remaining": _number(self.remaining)}


@dataclass(slots=True)
class BudgetStatus:
    budget: BudgetRecord
    period_start: datetime
    resets_at: datetime | None
    #: this period's spend; for a per-value budget, of the value that spent most
    spent: Decimal
    requests: int
    values: list[ValueSpend] = field(default_factory=list)
    #: thresholds (percent) alerted this period
    alerted: list[int] = field(default_factory=list)

    @property
    def remaining(self) -> Decimal:
        return max(ZERO, self.budget.limit_usd - self.spent)

    @property
    def used_up(self) -> bool:
        return self.spent >= self.budget.limit_usd

    def to_dict(self, *, values_limit: int | None = None) -> dict[str, object]:
        b = self.budget
        shown = self.values if values_limit is None else self.values[:values_limit]
        return {
            "id": b.id, "scope": b.scope, "limit_usd": _number(b.limit_usd), "period": b.period,
            "time_zone": b.time_zone, "soft": b.soft, "alert_at": list(b.alert_at),
            "webhook": redact_webhook(b.webhook), "spent": _number(self.spent), "remaining": _number(self.remaining),
            "requests": self.requests, "period_start": self.period_start.isoformat(),
            "resets_at": None if self.resets_at is None else self.resets_at.isoformat(),
            "per_value": b.per_value, "values": [v.to_dict() for v in shown], "value_count": len(self.values),
            "alerted": self.alerted,
            "created_at": b.created_at.isoformat(), "updated_at": b.updated_at.isoformat(),
        }


def status_of(budget: BudgetRecord, counters: list[BudgetSpend], start: datetime,
              alerted: list[int] | None = None) -> BudgetStatus:
    limit = budget.limit_usd
    values = sorted((ValueSpend(c.scope_value, c.spent, c.requests, max(ZERO, limit - c.spent))
                     for c in counters), key=lambda v: (-v.spent, v.value))
    top = values[0] if values else None
    return BudgetStatus(budget, start, next_start(start, budget.period, budget.time_zone),
                        spent=top.spent if top else ZERO,
                        requests=sum(v.requests for v in values) if budget.per_value else (top.requests if top else 0),
                        values=values if budget.per_value else [], alerted=sorted(alerted or []))


async def budget_statuses(table: BudgetTable, now: datetime, budgets: list[BudgetRecord] | None = None
                          ) -> list[BudgetStatus]:
    if budgets is None:
        budgets = await table.all()
    if not budgets:
        return []
    starts = {b.id: period_start(now, b.period, b.time_zone) for b in budgets}
    earliest = min(starts.values())
    counters: dict[str, list[BudgetSpend]] = {b.id: [] for b in budgets}
    for counter in await table.spend_since(earliest):
        if counter.budget_id in starts and counter.period_start == starts[counter.budget_id]:
            counters[counter.budget_id].append(counter)
    alerted: dict[str, list[int]] = {b.id: [] for b in budgets}
    for alert in await table.alerts_since(earliest):
        if alert.budget_id in starts and alert.period_start == starts[alert.budget_id] \
                and alert.sent_at is not None and alert.threshold not in alerted[alert.budget_id]:
            alerted[alert.budget_id].append(alert.threshold)
    return [status_of(b, counters[b.id], starts[b.id], alerted[b.id]) for b in budgets]
