"""A budget's calendar period: day, ISO week (Monday) or month in the budget's time zone, or total.

Period starts are instants (UTC-aware datetimes): the ledger is keyed by them, on both databases,
and the PostgreSQL writer computes the same with ``date_trunc(period, at AT TIME ZONE tz) AT TIME
ZONE tz`` (storage/budgets.py).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from majordomo_gateway.timebuckets import truncate, zone

__all__ = ["BUDGET_PERIODS", "TOTAL_START", "next_start", "period_start", "period_start_text"]

BUDGET_PERIODS = ("day", "week", "month", "total")
#: the one period of a ``total`` budget starts here (the ledger's key needs a value)
TOTAL_START = datetime(1970, 1, 1, tzinfo=UTC)


def period_start(at: datetime, period: str, tz: str) -> datetime:
    """The start, in UTC, of the period ``at`` falls in."""
    if period == "total":
        return TOTAL_START
    if period not in BUDGET_PERIODS:
        raise ValueError(f"unknown period {period!r}: use one of {', '.join(BUDGET_PERIODS)}")
    zone_info = zone(tz)
    local = at.astimezone(zone_info).replace(tzinfo=None)
    return truncate(local, period).replace(tzinfo=zone_info).astimezone(UTC)


def next_start(start: datetime, period: str, tz: str) -> datetime | None:
    """When the period that starts at ``start`` ends (the budget resets); None for ``total``."""
    if period == "total":
        return None
    zone_info = zone(tz)
    local = start.astimezone(zone_info).replace(tzinfo=None)
    if period == "day":
        local += timedelta(days=1)
    elif period == "week":
        local += timedelta(days=7)
    else:
        local = (local.replace(year=local.year + 1, month=1) if local.month == 12
                 else local.replace(month=local.month + 1))
    return local.replace(tzinfo=zone_info).astimezone(UTC)


def period_start_text(stored: str, period: str, tz: str) -> str:
    """``period_start`` for SQLite's ISO text, as the same ISO text the ledger stores (UTC)."""
    return period_start(datetime.fromisoformat(stored), period, tz).isoformat()
