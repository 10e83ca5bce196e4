"""Whether the database is up, as the writer last found it, and the probe that finds it back."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from majordomo_gateway.storage.database import Connection
from majordomo_gateway.storage.errors import DatabaseUnavailable
from majordomo_gateway.storage.writer.stats import Counters, describe

log = logging.getLogger("majordomo.writer")

# A batch that has not committed after this long is presumed stuck: the database is treated as
# down (a late commit is harmless, replays skip rows already present).
INSERT_TIMEOUT = 10.0
RECONNECT_INTERVAL = 1.0
# What counts as the database being away (rather than refusing particular rows).
OUTAGE_ERRORS = (DatabaseUnavailable, TimeoutError, OSError)

Prepare = Callable[[], Awaitable[None]]


class Outage:
    """Down from the first failure until a probe (``prepare`` then ``ping``) succeeds; probes at
    most every ``RECONNECT_INTERVAL``."""

    def __init__(self, database: Connection, counters: Counters, prepare: Prepare | None = None) -> None:
        self.database = database
        self.counters = counters
        self.prepare: Prepare = prepare or database.connect
        self.database_ok = True
        self._last_attempt = 0.0

    def mark_down(self, exc: BaseException) -> None:
        self.counters.write_errors += 1
        self.counters.last_error = describe(exc)
        if self.database_ok:
            log.error("database unavailable, rows go to the spool until it returns: %s", self.counters.last_error)
        self.database_ok = False
        self._last_attempt = time.monotonic()

    def probe_due(self, now: float) -> bool:
        return not self.database_ok and now - self._last_attempt >= RECONNECT_INTERVAL

    async def probe(self, now: float) -> bool:
        """Try the database once; True when it is back."""
        self._last_attempt = now
        try:
            await asyncio.wait_for(self.prepare(), timeout=INSERT_TIMEOUT)
            await asyncio.wait_for(self.database.ping(), timeout=INSERT_TIMEOUT)
        except OUTAGE_ERRORS as exc:
            self.counters.last_error = describe(exc)
            return False
        except Exception as exc:  # reachable but not usable (e.g. a failing migration)
            self.counters.last_error = describe(exc)
            log.error("database reachable but not usable: %s", self.counters.last_error)
            return False
        log.warning("database reachable again; replaying spooled rows")
        self.database_ok = True
        return True
