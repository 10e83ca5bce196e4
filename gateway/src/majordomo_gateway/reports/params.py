"""A report's parameters as text, whether from the command line or a query string.

``majordomo report --group-by feature --since 7d`` and ``GET /api/v1/usage?group_by=feature&since=7d``
both come through here, so the same words mean the same rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from majordomo_gateway.reports.timerange import parse_instant
from majordomo_gateway.reports.usage import Dimension, ReportError, UsageQuery, dimension

DEFAULT_SINCE = timedelta(days=30)


@dataclass(frozen=True, slots=True)
class TimeRange:
    since: datetime
    until: datetime | None


def parse_where(items: Sequence[str], flag: str = "--where") -> list[tuple[Dimension, str]]:
    where = []
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise ReportError(f"{flag} {item!r}: write DIM=VALUE, e.g. {flag} feature=summarize")
        where.append((dimension(name), value))
    return where


def time_range(since: str | None, until: str | None, *, tz: str, now: datetime) -> TimeRange:
    """``since`` defaults to 30 days before ``now``; ``until`` to none (up to now and beyond)."""
    start = parse_instant(since, now=now, tz=tz) if since else now - DEFAULT_SINCE
    end = parse_instant(until, now=now, tz=tz) if until else None
    return TimeRange(start, end)


def usage_query(*, group_by: Sequence[str], since: str | None, until: str | None, every: str | None, tz: str,
                where: Sequence[str], limit: int | None, now: datetime, owner_user_id: str | None = None,
                where_flag: str = "--where") -> UsageQuery:
    """ReportError, TimeRangeError or TimeZoneError (all ValueErrors) say what is wrong."""
    span = time_range(since, until, tz=tz, now=now)
    return UsageQuery(group_by=[dimension(name) for name in group_by], since=span.since, until=span.until,
                      every=every, tz=tz, where=parse_where(where, where_flag), limit=limit,
                      owner_user_id=owner_user_id)
