"""Calendar periods: the start of the hour, day, ISO week or month an instant falls in, in a time zone.

Shared by reports (``majordomo report --every``) and the SQLite backend, which registers
``bucket_start`` as the SQL function ``majordomo_bucket`` because SQLite has no time zones of its
own.  PostgreSQL computes the same with ``date_trunc(... AT TIME ZONE ...)``; ``local_start`` turns
its answer into the same ISO 8601 text, so both databases return identical buckets.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

PERIODS = ("hour", "day", "week", "month")


class TimeZoneError(ValueError):
    pass


@lru_cache(maxsize=64)
def zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise TimeZoneError(f"unknown time zone {name!r}: use an IANA name such as UTC or Europe/Paris") from None


def truncate(local: datetime, period: str) -> datetime:
    """The start of ``period`` for a wall-clock time (naive or aware, kept as given)."""
    if period == "hour":
        return local.replace(minute=0, second=0, microsecond=0)
    start = local.replace(hour=0, minute=0, second=0, microsecond=0)
    if period == "day":
        return start
    if period == "week":
        return start - timedelta(days=start.weekday())  # ISO weeks start on Monday
    if period == "month":
        return start.replace(day=1)
    raise ValueError(f"unknown period {period!r}: use one of {', '.join(PERIODS)}")


def local_start(naive_local: datetime, tz: str) -> str:
    """ISO 8601 text, with its UTC offset, for a period start given as wall-clock time in ``tz``."""
    return naive_local.replace(tzinfo=zone(tz)).isoformat()


def bucket_start(stored: str | None, period: str, tz: str) -> str | None:
    """The period start for a stored ISO timestamp (SQLite's text column), as ISO 8601 text in ``tz``."""
    if stored is None:
        return None
    local = datetime.fromisoformat(stored).astimezone(zone(tz))
    return local_start(truncate(local.replace(tzinfo=None), period), tz)
