"""Budgets as Prometheus gauges: each budget's spend this period, what remains, and its limit.

Read from the budget guard's in-memory view once per publish (metrics/shared.py), never on a
request.  Workers see the same ledger, so the gauges combine by ``max``.  A ``metadata:<Key>=*``
budget has one series per value: the ``max_values`` that spent most.
"""

from __future__ import annotations

from decimal import Decimal

from majordomo_gateway.budgets.guard import BudgetGuard
from majordomo_gateway.metrics.definitions import GAUGES, Family
from majordomo_gateway.metrics.process import GaugeSource, Labels

__all__ = ["budget_gauges"]


def budget_gauges(guard: BudgetGuard, max_values: int) -> GaugeSource:
    def read() -> list[tuple[Family, list[tuple[Labels, float]]]]:
        spend: list[tuple[Labels, float]] = []
        remaining: list[tuple[Labels, float]] = []
        limit: list[tuple[Labels, float]] = []
        per_budget: dict[str, int] = {}
        for budget, value, spent in sorted(guard.standing(), key=lambda row: row[2], reverse=True):
            shown = per_budget.get(budget.id, 0)
            if shown >= max_values:
                continue
            per_budget[budget.id] = shown + 1
            labels = (budget.id, budget.scope, budget.period, value)
            spend.append((labels, float(spent)))
            remaining.append((labels, float(max(Decimal(0), budget.limit_usd - spent))))
            limit.append((labels, float(budget.limit_usd)))
        return [(GAUGES["majordomo_budget_spend_usd"], spend), (GAUGES["majordomo_budget_remaining_usd"], remaining),
                (GAUGES["majordomo_budget_limit_usd"], limit)]

    return read
