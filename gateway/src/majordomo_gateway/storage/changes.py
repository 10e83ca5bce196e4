"""The change feed: every gateway process learns within a second that a key or a proxy key changed.

Triggers (migration 0003) catch every change to ``api_keys``, ``proxy_keys`` and
``proxy_key_providers`` whoever makes it (the CLI, the admin API, a hand-typed UPDATE), except the
usage counters the request rows bump.  A process does not learn *which* key changed, only that
one did: ``on_change`` then makes every cached key due for a fresh lookup (LookupCache.mark_all_due).
Changes are rare (an admin's action); a full re-check per change costs one query per key in use.

- PostgreSQL: the triggers ``NOTIFY majordomo_key_changes``; each process LISTENs on one
  connection of its own (never a pool connection: a pooled one is reset and shared).  A lost
  connection is re-opened every second until it answers; after any (re)connection the caches are
  re-checked in full, since notifications sent while it was down are lost.  A listening
  connection that died silently (no FIN from a vanished host) is found by a ``SELECT 1`` every
  few seconds.
- SQLite: the triggers bump ``key_changes.version``; each process reads that one row every
  ``poll_interval`` (250 ms) on a connection and thread of its own, so the poll never waits behind
  the row writer.  (``PRAGMA data_version`` would change with every request row written.)

Both run until cancelled and never raise: a database that is down only delays what they report.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

__all__ = ["CHANNEL", "ChangeFeed", "PostgresChangeFeed", "SQLiteChangeFeed"]

log = logging.getLogger("majordomo.changes")

CHANNEL = "majordomo_key_changes"
POLL_INTERVAL = 0.25
RETRY_INTERVAL = 1.0
HEALTH_INTERVAL = 5.0


class ChangeFeed(Protocol):
    async def run(self, on_change: Callable[[], None]) -> None:
        """Call ``on_change`` soon after every committed key change, until cancelled."""
        ...


class SQLiteChangeFeed:
    def __init__(self, path: str, *, poll_interval: float = POLL_INTERVAL) -> None:
        self.path = path
        self.poll_interval = poll_interval

    async def run(self, on_change: Callable[[], None]) -> None:
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="majordomo-changes")
        loop = asyncio.get_running_loop()
        conn: sqlite3.Connection | None = None
        seen: int | None = None
        failing = False
        try:
            while True:
                try:
                    if conn is None:
                        conn = await loop.run_in_executor(executor, self._open)
                    version = await loop.run_in_executor(executor, _version, conn)
                except sqlite3.Error as exc:
                    if not failing:
                        log.warning("key change feed: cannot read %s (%s); retrying", self.path, exc)
                    failing = True
                    if conn is not None:
                        await loop.run_in_executor(executor, conn.close)
                        conn = None
                    await asyncio.sleep(RETRY_INTERVAL)
                    continue
                if failing or (seen is not None and version != seen):
                    # After a failure we cannot tell what was missed: re-check everything.
                    on_change()
                failing, seen = False, version
                await asyncio.sleep(self.poll_interval)
        finally:
            # A cancelled run_in_executor leaves its call running in the thread: closing the
            # connection here, from the loop's thread, while that thread reads through it crashes
            # the process (SIGSEGV inside sqlite3).  The close queues behind the read instead.
            if conn is not None:
                executor.submit(conn.close)
            executor.shutdown(wait=False)

    def _open(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        conn.execute("PRAGMA busy_timeout=1000")
        return conn


def _version(conn: sqlite3.Connection) -> int:
    row = conn.execute("SELECT version FROM key_changes WHERE id = 1").fetchone()
    return int(row[0]) if row else 0


class PostgresChangeFeed:
    def __init__(self, url: str, *, health_interval: float = HEALTH_INTERVAL) -> None:
        self.url = url
        self.health_interval = health_interval

    async def run(self, on_change: Callable[[], None]) -> None:
        import asyncpg

        failing = False
        while True:
            try:
                await self._listen(on_change, announce=failing)
                reason = "closed"
            except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                reason = type(exc).__name__
            if not failing:
                log.warning("key change feed: PostgreSQL connection lost (%s); reconnecting", reason)
            failing = True
            await asyncio.sleep(RETRY_INTERVAL)

    async def _listen(self, on_change: Callable[[], None], *, announce: bool) -> None:
        """Listen on one connection until it is lost."""
        import asyncpg

        lost = asyncio.Event()
        conn: Any = await asyncpg.connect(self.url, timeout=5)
        try:
            conn.add_termination_listener(lambda _conn: lost.set())
            await conn.add_listener(CHANNEL, lambda *_args: on_change())
            if announce:
                log.info("key change feed: listening again")
            # Notifications sent before LISTEN (at start, or while disconnected) are lost.
            on_change()
            while not lost.is_set():
                try:
                    await asyncio.wait_for(lost.wait(), timeout=self.health_interval)
                except TimeoutError:
                    await conn.fetchval("SELECT 1", timeout=self.health_interval)
        finally:
            if not conn.is_closed():
                conn.terminate()
