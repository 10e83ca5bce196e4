"""The wall clock the gateway stamps rows with, as a value that can be replaced.

Only ``requested_at`` comes from it; durations are measured with ``time.perf_counter`` and never
follow a replaced clock.  ``majordomo demo`` passes a compressed one to replay a week in seconds.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

__all__ = ["Clock", "utc_now"]

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)
