"""The writer's two tasks: the batching loop (group commit, drain on stop) and the guard."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time

from majordomo_gateway.storage.database import LoggingDatabase
from majordomo_gateway.storage.errors import DatabaseUnavailable
from majordomo_gateway.storage.records import RequestRecord
from majordomo_gateway.storage.spool import Spool, Unspoolable
from majordomo_gateway.storage.writer.inserts import Inserter
from majordomo_gateway.storage.writer.outage import OUTAGE_ERRORS, Outage, Prepare
from majordomo_gateway.storage.writer.queue import RowQueue
from majordomo_gateway.storage.writer.replay import Replayer
from majordomo_gateway.storage.writer.spooling import SpoolKeeper
from majordomo_gateway.storage.writer.stats import Counters, WriterStats, describe

log = logging.getLogger("majordomo.writer")

# While anything is wrong, one status line this often.
STATUS_LOG_INTERVAL = 10.0
STATUS_CHECK_INTERVAL = 1.0
# On stop, how many rounds without progress before rows neither the database nor the spool will
# take are given up (logged with their count) so that the process can exit.
DRAIN_ATTEMPTS = 3


class RowWriter:
    def __init__(
        self,
        database: LoggingDatabase,
        spool: Spool,
        *,
        batch_size: int = 100,
        flush_interval: float = 0.1,
        queue_size: int = 20_000,
        prepare: Prepare | None = None,
        on_spool_failure: str = "refuse",
    ) -> None:
        """``prepare``: called before each reconnection attempt (connect, migrate), so a gateway
        started while its database was down gets going once it is back; default ``connect``.
        ``on_spool_failure``: ``refuse`` sets ``refusing`` while neither the database nor the spool
        would take a row; ``accept`` never does (rows are then held in memory, bounded)."""
        self.database = database
        self.spool = spool
        self.batch_size = batch_size
        self.flush_interval = flush_interval
        self.queue_size = queue_size
        self.counters = Counters()
        self.queue = RowQueue(self.counters, batch_size=batch_size, queue_size=queue_size)
        self.outage = Outage(database, self.counters, prepare)
        self.keeper = SpoolKeeper(spool, self.queue, self.counters)
        self.inserter = Inserter(database, self.outage, self.counters)
        self.replayer = Replayer(self.keeper, self.inserter, self.queue)
        self._task: asyncio.Task[None] | None = None
        self._guard: asyncio.Task[None] | None = None
        self._guard_stop = asyncio.Event()
        self._stopping = False
        self._last_status_log = 0.0
        self._last_status_check = 0.0
        self._unhealthy = False
        self._inflight: list[RequestRecord] | None = None
        self._inflight_spooled = False
        # Rows of the guard's copy of the in-flight batch that the spool could not carry: set
        # aside only if the insert then fails (it may well write them).
        self._inflight_unspooled: list[Unspoolable] = []
        self._ticks = 0  # guard ticks so far
        self._busy_tick: int | None = None  # the tick at which the writer started waiting on the database
        self._refuse_unrecorded = on_spool_failure == "refuse"
        #: True while new requests should be refused because their rows could not be recorded:
        #: a plain attribute, so that admission reads it for free.  Kept current by both tasks.
        self.refusing = False

    # -- the request side -------------------------------------------------------------------
    def submit(self, record: RequestRecord) -> None:
        """Hand over a finished row.  Never blocks, never raises."""
        self.queue.submit(record)

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> None:
        if self._task is None:
            loop = asyncio.get_running_loop()
            self._task = loop.create_task(self._run(), name="majordomo-row-writer")
            self._guard = loop.create_task(self._guard_loop(), name="majordomo-row-writer-guard")

    async def close(self) -> None:
        """Drain: everything queued reaches the database or, failing that, the spool."""
        # The guard finishes what it is doing first (it may hold rows), then the drain owns them.
        self._guard_stop.set()
        if self._guard is not None:
            await self._guard
            self._guard = None
        self._stopping = self.keeper.stopping = True
        self.queue.wake.set()
        if self._task is not None:
            await self._task
            self._task = None
        await self.keeper.close()
        log.info("row writer stopped: %s", self.stats().summary())

    def mark_unavailable(self, reason: str) -> None:
        """The owner found the database down (e.g. at start): spool, and probe until it is back."""
        self.outage.mark_down(DatabaseUnavailable(reason))
        self._update_refusing()

    def _update_refusing(self) -> None:
        refusing = self._refuse_unrecorded and not (self.outage.database_ok or self.keeper.ok)
        if refusing != self.refusing:
            self.refusing = refusing
            if refusing:
                log.critical("refusing requests (503) until rows can be recorded: the database is down (%s) and "
                             "the spool is not writable (%s); writer.on_spool_failure=accept would serve them",
                             self.counters.last_error, self.counters.last_spool_error)
            else:
                log.warning("rows can be recorded again (database %s, spool %s): accepting requests",
                            "up" if self.outage.database_ok else "down", "ok" if self.keeper.ok else "not writable")

    @property
    def database_ok(self) -> bool:
        return self.outage.database_ok

    @property
    def spool_ok(self) -> bool:
        return self.keeper.ok

    # The counters, as attributes of the writer (what callers and tests read).
    @property
    def rows_written(self) -> int:
        return self.counters.rows_written

    @property
    def rows_spooled(self) -> int:
        return self.counters.rows_spooled

    @property
    def rows_replayed(self) -> int:
        return self.counters.rows_replayed

    @property
    def rows_dropped(self) -> int:
        return self.counters.rows_dropped

    @property
    def rows_rejected(self) -> int:
        return self.counters.rows_rejected

    @property
    def records_damaged(self) -> int:
        return self.counters.records_damaged

    @property
    def write_errors(self) -> int:
        return self.counters.write_errors

    @property
    def spool_errors(self) -> int:
        return self.counters.spool_errors

    @property
    def last_error(self) -> str | None:
        return self.counters.last_error

    @property
    def last_spool_error(self) -> str | None:
        return self.counters.last_spool_error

    def stats(self) -> WriterStats:
        state = self.spool.state()
        counters = self.counters
        oldest = self.queue.oldest_responses()
        if state.oldest is not None:
            oldest.append(state.oldest)
        return WriterStats(
            pid=os.getpid(),
            flush_interval_s=self.flush_interval,
            queue_depth=len(self.queue),
            queue_size=self.queue_size,
            inflight_rows=self.queue.held_rows(),
            oldest_unwritten_age_s=round(max(0.0, time.time() - min(oldest)), 3) if oldest else None,
            spool_ok=self.keeper.ok,
            refusing_requests=self.refusing,
            spool_files=state.files,
            spool_bytes=state.bytes,
            rows_written=counters.rows_written,
            rows_spooled=counters.rows_spooled,
            rows_replayed=counters.rows_replayed,
            rows_dropped=counters.rows_dropped,
            rows_rejected=counters.rows_rejected,
            duplicates=counters.duplicates,
            records_damaged=counters.records_damaged,
            write_errors=counters.write_errors,
            spool_errors=counters.spool_errors,
            database_ok=self.outage.database_ok,
            last_error=counters.last_error,
            last_spool_error=counters.last_spool_error,
        )

    # -- the batching loop ----------------------------------------------------------------------
    async def _run(self) -> None:
        queue, counters = self.queue, self.counters
        stuck = 0
        progress = True
        while True:
            if not progress:
                # Neither the database nor the spool took rows: wait a window (not for the next
                # submit, which a full queue would make immediate) instead of spinning.
                await asyncio.sleep(self.flush_interval)
            elif not self._stopping and len(queue) < self.batch_size:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(queue.wake.wait(), timeout=self.flush_interval)
            queue.wake.clear()
            before, settled = len(queue), counters.settled
            self._busy_tick = self._ticks
            try:
                await self._cycle()
            except Exception:  # the writer must outlive any bug in one cycle
                log.exception("row writer cycle failed; retrying")
                await asyncio.sleep(self.flush_interval)
            finally:
                self._busy_tick = None
                self._update_refusing()
            progress = not before or counters.settled > settled
            if not self._stopping:
                continue
            if not len(queue):
                return
            if progress:
                stuck = 0
                continue
            stuck += 1
            if stuck >= DRAIN_ATTEMPTS:
                lost = queue.drop_all()
                log.critical("stopping with %d rows lost: neither the database (%s) nor the spool (%s) "
                             "would take them", lost, counters.last_error, counters.last_spool_error)
                return
            await asyncio.sleep(min(1.0, 5 * self.flush_interval))

    async def _cycle(self) -> None:
        queue, outage = self.queue, self.outage
        now = time.monotonic()
        if not self._stopping and outage.probe_due(now) and await outage.probe(now):
            self.keeper.pending = True
        if not outage.database_ok:
            # Database down: rows go to disk now rather than pile up in memory.
            await self.keeper.append(queue.take_all())
            return
        while len(queue):
            batch = queue.take(self.batch_size)
            if not await self._insert(batch):
                await self.keeper.append(queue.take_all())
                return
            if self._stopping:
                continue
            # Over the bound (the database keeps up slower than traffic): the excess waits on disk.
            excess = len(queue) - self.queue_size
            if excess > 0:
                await self.keeper.append(queue.take(excess))
            break  # one batch per cycle keeps each cycle short; a full queue wakes us again
        if self._stopping or not outage.database_ok:
            return
        await self.replayer.maybe_replay(now)

    async def _insert(self, batch: list[RequestRecord]) -> bool:
        """True when the batch is settled (inserted, or refused rows set aside); False when the
        database is down, the batch then being in the spool (or, the spool failing, in memory)."""
        counters, keeper = self.counters, self.keeper
        token = self.queue.hold(batch)
        self._inflight, self._inflight_spooled, self._inflight_unspooled = batch, False, []
        try:
            try:
                result = await self.inserter.insert(batch)
            except OUTAGE_ERRORS as exc:
                self.outage.mark_down(exc)
                async with keeper.lock:  # the guard may be spooling this very batch
                    self._inflight = None
                    if not self._inflight_spooled:
                        await keeper.append_locked(batch)
                    elif self._inflight_unspooled:
                        unspooled = self._inflight_unspooled
                        await keeper.set_aside([u.record for u in unspooled], unspooled[0].reason)
                return False
            except Exception as exc:
                # Not an outage: something about these rows.  Isolate them one by one so a single
                # bad row cannot block the rest; what the database refuses is set aside.
                counters.write_errors += 1
                counters.last_error = describe(exc)
                log.error("inserting %d rows failed (%s); retrying one by one", len(batch), counters.last_error)
                self._inflight = None
                refused = await self.inserter.one_by_one(batch)
                if refused is None:
                    await keeper.append(batch)  # the database went away meanwhile; replays are idempotent
                    return False
                await keeper.set_aside(refused)
                counters.settled += len(batch) - len(refused)
                return True
            counters.rows_written += result.inserted
            counters.duplicates += result.duplicates
            counters.settled += len(batch)
            return True
        finally:
            self._inflight = None
            self.queue.release(token)

    # -- the guard: no row stays only in memory for long ---------------------------------------
    async def _guard_loop(self) -> None:
        next_check = 0.0
        tick = max(0.005, self.flush_interval / 2)
        while not self._guard_stop.is_set():
            try:
                now = time.monotonic()
                if now >= next_check:
                    await self.keeper.check()
                    next_check = now + self.keeper.check_interval()
                await self._protect()
                self._update_refusing()
                self._log_status()
            except Exception:
                log.exception("row writer guard failed; retrying")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._guard_stop.wait(), timeout=tick)

    async def _protect(self) -> None:
        self._ticks += 1
        busy = self._busy_tick
        # Three ticks after the cycle began: at least a whole window of the event loop's own
        # progress, so the writer is waiting on the database, not merely scheduled late.
        if busy is None or self._ticks - busy < 3:
            return
        batch = self._inflight
        if batch is not None and not self._inflight_spooled:
            # The database has not answered within a window: keep a copy of the batch on disk.
            async with self.keeper.lock:
                if self._inflight is batch and not self._inflight_spooled:
                    refused = await self.keeper.spool_rows(list(batch), requeue=False, hold=False)
                    if refused is not None:
                        self._inflight_spooled = True
                        self._inflight_unspooled = refused
        if len(self.queue):
            # Rows the stuck writer cannot reach wait on disk instead.
            await self.keeper.append(self.queue.take_all())

    def _log_status(self) -> None:
        now = time.monotonic()
        # stats() lists the spool directory: once a second, not on every guard tick.
        if now - self._last_status_check < STATUS_CHECK_INTERVAL:
            return
        self._last_status_check = now
        stats = self.stats()
        queue = self.queue
        unhealthy = (not stats.database_ok or not stats.spool_ok or stats.spool_bytes > 0
                     or stats.queue_depth > self.batch_size or stats.rows_dropped > queue.dropped_logged)
        if unhealthy:
            if now - self._last_status_log >= STATUS_LOG_INTERVAL:
                self._last_status_log = now
                log.warning("row writer: %s", stats.summary())
                queue.dropped_logged = max(queue.dropped_logged, stats.rows_dropped)
        elif self._unhealthy:
            self._last_status_log = now
            log.info("row writer caught up: %s", stats.summary())
        self._unhealthy = unhealthy
