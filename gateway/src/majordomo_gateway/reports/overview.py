"""The dashboard's overview: spend over time stacked by one dimension, the top features, users,
models and keys, the models without a price, and the error rate.

Every number is a ``run_usage_report`` over the same rows, so it equals what ``majordomo report``
prints for the same range (``--group-by feature --every day`` for the chart, ``--group-by model``
for the top models, and so on).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from majordomo_gateway.reports.usage import (
    REPORT_COLUMNS,
    Dimension,
    ReportDatabase,
    ReportError,
    UsageQuery,
    dimension,
    run_usage_report,
)
from majordomo_gateway.timebuckets import local_start, truncate, zone

#: the top lists of the overview, by dimension name
TOP_DIMENSIONS = ("feature", "user", "model", "key")
#: the stacked series beyond this many are summed into one named OTHER
MAX_STACKS = 8
OTHER = "(other)"
_MAX_BUCKETS = 2_000


def auto_period(since: datetime, until: datetime) -> str:
    """A chart of tens to a couple of hundred points: hours up to eight days, days up to three
    months, then weeks, then months."""
    span = until - since
    if span <= timedelta(days=8):
        return "hour"
    if span <= timedelta(days=92):
        return "day"
    return "week" if span <= timedelta(days=731) else "month"


def _next(start: datetime, period: str) -> datetime:
    if period == "hour":
        return start + timedelta(hours=1)
    if period == "day":
        return start + timedelta(days=1)
    if period == "week":
        return start + timedelta(weeks=1)
    return (start.replace(day=28) + timedelta(days=4)).replace(day=1)


def period_starts(since: datetime, until: datetime, period: str, tz: str) -> list[str]:
    """Every period start from ``since``'s period up to ``until``, as reports name buckets: the chart
    shows a quiet day as zero rather than skipping it.  Wall-clock steps, as the databases bucket."""
    local_zone = zone(tz)
    current = truncate(since.astimezone(local_zone).replace(tzinfo=None), period)
    end = until.astimezone(local_zone).replace(tzinfo=None)
    starts: list[str] = []
    while current < end and len(starts) < _MAX_BUCKETS:
        starts.append(local_start(current, tz))
        current = _next(current, period)
    return starts


@dataclass(frozen=True, slots=True)
class OverviewQuery:
    since: datetime
    until: datetime
    stack_by: Dimension
    every: str
    tz: str = "UTC"
    where: Sequence[tuple[Dimension, str]] = ()
    top: int = 10
    owner_user_id: str | None = None

    def __post_init__(self) -> None:
        if not 1 <= self.top <= 100:
            raise ReportError("top: between 1 and 100 rows a list")

    def usage(self, group_by: Sequence[Dimension] = (), *, every: str | None = None,
              limit: int | None = None) -> UsageQuery:
        return UsageQuery(group_by=group_by, since=self.since, until=self.until, every=every, tz=self.tz,
                          where=self.where, limit=limit, owner_user_id=self.owner_user_id)


def _label(value: Any) -> str:
    return "(none)" if value is None else str(value)


def _series(rows: list[dict[str, Any]], label: str, buckets: list[str]) -> list[dict[str, Any]]:
    """One series per value of the stacked dimension (the MAX_STACKS costliest, then OTHER), each
    with cost and requests per bucket."""
    spend: dict[Any, Decimal] = {}
    count: dict[Any, int] = {}
    for row in rows:
        value = row[label]
        spend[value] = spend.get(value, Decimal(0)) + (row["cost_usd"] or Decimal(0))
        count[value] = count.get(value, 0) + row["requests"]
    ranked = sorted(spend, key=lambda v: (-spend[v], -count[v], _label(v)))
    kept = set(ranked if len(ranked) <= MAX_STACKS + 1 else ranked[:MAX_STACKS])
    index = {bucket: i for i, bucket in enumerate(buckets)}
    series: dict[str, dict[str, Any]] = {}
    for value in (v for v in ranked if v in kept):
        series[_label(value)] = {"value": value, "label": _label(value), "cost_usd": [Decimal(0)] * len(buckets),
                                 "requests": [0] * len(buckets)}
    for row in rows:
        name = _label(row[label]) if row[label] in kept else OTHER
        if name not in series:
            series[name] = {"value": None, "label": OTHER, "other": True, "cost_usd": [Decimal(0)] * len(buckets),
                            "requests": [0] * len(buckets)}
        position = index[row["bucket"]]
        series[name]["cost_usd"][position] += row["cost_usd"] or Decimal(0)
        series[name]["requests"][position] += row["requests"]
    return list(series.values())


async def overview(database: ReportDatabase, query: OverviewQuery) -> dict[str, Any]:
    totals = (await run_usage_report(database, query.usage())).totals
    requests = totals["requests"]
    over_time = await run_usage_report(database, query.usage([query.stack_by], every=query.every))
    buckets = period_starts(query.since, query.until, query.every, query.tz)
    known = set(buckets)
    extra = sorted({row["bucket"] for row in over_time.rows if row["bucket"] not in known},
                   key=datetime.fromisoformat)
    if extra:  # rows outside the computed periods (a clock change edge): shown, never dropped
        buckets = sorted([*buckets, *extra], key=datetime.fromisoformat)
    top = {}
    for name in TOP_DIMENSIONS:
        report = await run_usage_report(database, query.usage([dimension(name)], limit=query.top))
        top[name] = report.rows
    by_model = await run_usage_report(database, query.usage([dimension("provider"), dimension("model")]))
    unpriced = sorted(({"provider": row["provider"], "model": row["model"], "unpriced": row["unpriced"]}
                       for row in by_model.rows if row["unpriced"]), key=lambda r: -int(r["unpriced"]))
    return {
        "since": query.since.isoformat(), "until": query.until.isoformat(), "tz": query.tz, "every": query.every,
        "totals": {name: totals[name] for name in REPORT_COLUMNS},
        "error_rate": (totals["errors"] / requests) if requests else None,
        "spend_over_time": {"stack_by": query.stack_by.label, "buckets": buckets,
                            "series": _series(over_time.rows, query.stack_by.label, buckets)},
        "top": top,
        "unpriced_models": unpriced,
    }

