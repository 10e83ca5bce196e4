"""The writer's side of the spool: appends off the event loop, one at a time, and what to do when
the disk refuses them (hold rows in memory, retry, report)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from majordomo_gateway.storage.records import RequestRecord
from majordomo_gateway.storage.spool import Spool, Unspoolable
from majordomo_gateway.storage.writer.queue import RowQueue
from majordomo_gateway.storage.writer.stats import Counters

log = logging.getLogger("majordomo.writer")

T = TypeVar("T")

# While the spool fails, how often it is tried again; while it works, how often it is re-checked
# (a 4 KiB probe file), so a full disk is reported before rows need it.
SPOOL_RETRY_INTERVAL = 1.0
SPOOL_CHECK_INTERVAL = 30.0


class SpoolKeeper:
    def __init__(self, spool: Spool, queue: RowQueue, counters: Counters) -> None:
        self.spool = spool
        self.queue = queue
        self.counters = counters
        # Spool I/O (write + fsync) is blocking; one thread keeps it off the event loop and ordered.
        self._io = ThreadPoolExecutor(max_workers=1, thread_name_prefix="majordomo-spool")
        # Held by whoever appends, so the guard and the batcher never spool the same batch twice.
        self.lock = asyncio.Lock()
        self.ok = True
        self.stopping = False  # on stop every append is tried, whatever the retry schedule says
        self.pending = True  # replay whatever an earlier run left behind
        self._retry_at = 0.0

    async def in_thread(self, fn: Callable[..., T], *args: object) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._io, fn, *args)

    async def append(self, records: list[RequestRecord]) -> bool:
        if not records:
            return True
        token = self.queue.hold(records)  # counted while waiting for the lock too
        try:
            async with self.lock:
                return await self.append_locked(records, hold=False)
        finally:
            self.queue.release(token)

    async def append_locked(self, records: list[RequestRecord], *, requeue: bool = True, hold: bool = True) -> bool:
        """Append to the spool (caller holds ``lock``).  On failure the rows go back to the front of
        the queue (unless ``requeue`` is false), within the memory bound.  Rows the spool cannot
        carry are set aside (``*.rejected``), the others written."""
        refused = await self.spool_rows(records, requeue=requeue, hold=hold)
        if refused is None:
            return False
        await self.set_aside([u.record for u in refused], refused[0].reason if refused else None)
        return True

    async def spool_rows(self, records: list[RequestRecord], *, requeue: bool = True,
                         hold: bool = True) -> list[Unspoolable] | None:
        """``append_locked`` without setting aside the rows the spool cannot carry: they are
        returned (the guard's copy of a batch still being inserted keeps them for the insert's
        outcome).  None when the spool failed."""
        if not records:
            return []
        if self.ok or self.stopping or time.monotonic() >= self._retry_at:
            token = self.queue.hold(records) if hold else None
            try:
                refused: list[Unspoolable] = await self.in_thread(self.spool.append, records)
            except OSError as exc:
                self._failed(exc)
            else:
                self._works()
                spooled = len(records) - len(refused)
                self.counters.rows_spooled += spooled
                self.counters.settled += spooled
                self.pending = self.pending or spooled > 0
                return refused
            finally:
                if token is not None:
                    self.queue.release(token)
        if requeue:
            self.queue.keep_in_memory(records)
        return None

    async def check(self) -> None:
        async with self.lock:
            try:
                await self.in_thread(self.spool.check)
            except OSError as exc:
                self._failed(exc)
            else:
                self._works()

    def check_interval(self) -> float:
        return SPOOL_CHECK_INTERVAL if self.ok else SPOOL_RETRY_INTERVAL

    async def set_aside(self, records: list[RequestRecord], unspoolable: str | None = None) -> None:
        """Keep rows the database refuses (or, with ``unspoolable`` saying why, that the spool
        cannot carry) in a *.rejected file."""
        if not records:
            return
        counters = self.counters
        counters.rows_rejected += len(records)
        counters.settled += len(records)
        refused_by = "the database" if unspoolable is None else "the spool"
        reason = counters.last_error if unspoolable is None else unspoolable
        try:
            path: Path = await self.in_thread(self.spool.set_aside, records)
        except OSError as exc:
            counters.rows_dropped += len(records)
            log.critical("%d rows refused by %s (%s) could not be kept either: %s",
                         len(records), refused_by, reason, exc)
            return
        log.error("%d rows refused by %s (%s) were kept in %s; row ids: %s", len(records), refused_by, reason, path,
                  ", ".join(str(r.id) for r in records[:10]) + (" ..." if len(records) > 10 else ""))

    async def close(self) -> None:
        async with self.lock:
            await self.in_thread(self.spool.close)
        self._io.shutdown(wait=True)

    def _failed(self, exc: OSError) -> None:
        self.counters.spool_errors += 1
        self.counters.last_spool_error = f"{self.spool.directory}: {exc.strerror or exc}"
        self._retry_at = time.monotonic() + SPOOL_RETRY_INTERVAL
        if self.ok:
            self.ok = False
            log.critical("cannot write the spool (%s): rows that cannot reach the database are held in memory, "
                         "at most writer.queue_size=%d, and are lost if the process stops; "
                         "writer.on_spool_failure says whether requests are served meanwhile",
                         self.counters.last_spool_error, self.queue.queue_size)

    def _works(self) -> None:
        if not self.ok:
            self.ok = True
            log.warning("the spool %s is writable again", self.spool.directory)
