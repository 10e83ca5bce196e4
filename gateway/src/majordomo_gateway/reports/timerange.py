"""``--since`` / ``--until`` values: ``7d``, ``24h``, ``90m``, ``2w``, a date, or an ISO date-time."""

from __future__ import annotations

import re
from datetime import datetime, timedelta

from majordomo_gateway.timebuckets import zone

_RELATIVE = re.compile(r"^(\d+)\s*(m|h|d|w)$")
_UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


class TimeRangeError(ValueError):
    pass


def parse_instant(text: str, *, now: datetime, tz: str) -> datetime:
    """An aware datetime.  Relative values count back from ``now``; a date is its midnight in
    ``tz``; a date-time without an offset is read in ``tz``."""
    value = text.strip()
    relative = _RELATIVE.match(value.lower())
    if relative:
        return now - timedelta(**{_UNITS[relative.group(2)]: int(relative.group(1))})
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise TimeRangeError(f"cannot read {text!r} as a time: use 7d, 24h, 90m, 2w, a date such as "
                             "2026-11-01, or an ISO date-time such as 2026-11-01T09:00:00+01:00") from None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=zone(tz))
