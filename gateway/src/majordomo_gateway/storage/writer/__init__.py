"""The row writer: the only thing on the request path's side that talks to the database.

Requests hand finished rows to ``submit`` (no I/O, no await).  A background task batches them
every ``flush_interval`` (the group-commit window) or as soon as a batch fills, and inserts each
batch in one round trip.  When the database is down or too slow, or the memory queue is over its
bound, rows go to the durable spool instead; once the database answers again the spool is
replayed.  Row ids make every replay idempotent.

The durability promise: a row stays only in memory for about two windows at most.  It waits at
most one window for its batch.  A guard task ticks every half window; when it sees the writer
stuck on the database (an insert, a probe, a replay) for a whole window, it appends to the spool
the batch being inserted (the insert goes on; replaying rows that did commit is harmless) and
every queued row.  So a SIGKILL, whatever the database is doing, loses at most the rows answered
in the last ~2 x ``flush_interval``.  The guard counts its own ticks rather than reading clocks:
when the process is CPU-bound every await is late, which is not a stuck database, and spooling
then would only add work to an overloaded process (the excess over ``queue_size`` still goes to
the spool).

When the spool cannot be written either, rows are held in memory up to ``queue_size`` and the
excess is dropped and counted: the gateway keeps serving (see docs/reliability.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from majordomo_gateway.storage.database import Database, DatabaseUnavailable
from majordomo_gateway.storage.records import RequestRecord
from majordomo_gateway.storage.spool import Spool

log = logging.getLogger("majordomo.writer")

# A batch that has not committed after this long is presumed stuck: the database is treated as
# down (a late commit is harmless, replays skip rows already present).
INSERT_TIMEOUT = 10.0
RECONNECT_INTERVAL = 1.0
# While the spool fails, how often it is tried again; while it works, how often it is re-checked
# (a 4 KiB probe file), so a full disk is reported before rows need it.
SPOOL_RETRY_INTERVAL = 1.0
SPOOL_CHECK_INTERVAL = 30.0
# How often the spool directory is scanned for files left by other (exited, killed) processes.
SPOOL_SCAN_INTERVAL = 5.0
# While anything is wrong, one status line this often.
STATUS_LOG_INTERVAL = 10.0
STATUS_CHECK_INTERVAL = 1.0
# On stop, how many rounds without progress before rows neither the database nor the spool will
# take are given up (logged with their count) so that the process can exit.
DRAIN_ATTEMPTS = 3

Prepare = Callable[[], Awaitable[None]]


@dataclass(slots=True)
class WriterStats:
    pid: int
    flush_interval_s: float
    queue_depth: int
    queue_size: int
    inflight_rows: int
    oldest_unwritten_age_s: float | None
    spool_ok: bool
    spool_files: int
    spool_bytes: int
    rows_written: int
    rows_spooled: int
    rows_replayed: int
    rows_dropped: int
    rows_rejected: int
    records_damaged: int
    write_errors: int
    spool_errors: int
    database_ok: bool
    last_error: str | None
    last_spool_error: str | None

    def as_dict(self) -> dict[str, object]:
        return {name: getattr(self, name) for name in self.__slots__}  # type: ignore[attr-defined]

    def warnings(self) -> list[str]:
        """What an operator should know, in words (``/readyz`` and ``majordomo status`` show it)."""
        found = []
        if not self.database_ok:
            found.append("database unavailable: rows go to the spool")
        if not self.spool_ok:
            found.append(f"spool not writable ({self.last_spool_error}): rows that cannot reach the database "
                         f"are held in memory (at most {self.queue_size}) and lost if the process stops")
        if self.rows_dropped:
            found.append(f"{self.rows_dropped} rows dropped since start (database and spool both unavailable)")
        if self.rows_rejected:
            found.append(f"{self.rows_rejected} rows refused by the database, kept in *.rejected spool files")
        if self.records_damaged:
            found.append(f"{self.records_damaged} damaged spool records skipped (files kept as *.damaged)")
        return found

    def summary(self) -> str:
        age = "-" if self.oldest_unwritten_age_s is None else f"{self.oldest_unwritten_age_s:.1f}s"
        return (f"database {'ok' if self.database_ok else 'DOWN'}, spool {'ok' if self.spool_ok else 'NOT WRITABLE'}; "
                f"queue {self.queue_depth}+{self.inflight_rows} in flight, spool {self.spool_bytes} bytes in "
                f"{self.spool_files} files, oldest unwritten row {age}; written {self.rows_written}, "
                f"spooled {self.rows_spooled}, replayed {self.rows_replayed}, dropped {self.rows_dropped}, "
                f"write errors {self.write_errors}, spool errors {self.spool_errors}")


class RowWriter:
    def __init__(
        self,
        database: Database,
        spool: Spool,
        *,
        batch_size: int = 100,
        flush_interval: float = 0.1,
        queue_size: int = 20_000,
        prepare: Prepare | None = None,
    ) -> None:
        """``prepare``: called before each reconnection attempt (connect, migrate), so a gateway
        started while its database was down gets going once it is back; default ``connect``."""
        self.database = database
        self.spool = spool
        self.batch_size = batch_size
        self.flush_interval = flush_interval
        self.queue_size = queue_size
        self._prepare: Prepare = prepare or database.connect
        self._queue: deque[RequestRecord] = deque()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._guard: asyncio.Task[None] | None = None
        self._guard_stop = asyncio.Event()
        self._stopping = False
        # Spool I/O (write + fsync) is blocking; one thread keeps it off the event loop and ordered.
        self._io = ThreadPoolExecutor(max_workers=1, thread_name_prefix="majordomo-spool")
        self._spool_lock = asyncio.Lock()
        self._database_ok = True
        self._spool_ok = True
        self._spool_retry_at = 0.0
        self._spool_pending = True  # replay whatever an earlier run left behind
        self._last_attempt = 0.0
        self._last_scan = 0.0
        self._last_status_log = 0.0
        self._last_status_check = 0.0
        self._unhealthy = False
        self._dropped_logged = 0
        # Rows taken off the queue and not yet in the database or the spool, by batch.
        self._held: dict[int, Sequence[RequestRecord]] = {}
        self._inflight: list[RequestRecord] | None = None
        self._inflight_spooled = False
        self._ticks = 0  # guard ticks so far
        self._busy_tick: int | None = None  # the tick at which the writer started waiting on the database
        self._settled = 0  # rows that left memory for the database, the spool or a *.rejected file
        self.rows_written = 0
        self.rows_spooled = 0
        self.rows_replayed = 0
        self.rows_dropped = 0
        self.rows_rejected = 0
        self.records_damaged = 0
        self.write_errors = 0
        self.spool_errors = 0
        self.last_error: str | None = None
        self.last_spool_error: str | None = None

    # -- the request side -------------------------------------------------------------------
    def submit(self, record: RequestRecord) -> None:
        """Hand over a finished row.  Never blocks, never raises."""
        self._queue.append(record)
        if len(self._queue) >= self.batch_size:
            self._wake.set()

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
        self._stopping = True
        self._wake.set()
        if self._task is not None:
            await self._task
            self._task = None
        async with self._spool_lock:
            await self._in_thread(self.spool.close)
        self._io.shutdown(wait=True)
        log.info("row writer stopped: %s", self.stats().summary())

    def mark_unavailable(self, reason: str) -> None:
        """The owner found the database down (e.g. at start): spool, and probe until it is back."""
        self._mark_down(DatabaseUnavailable(reason))

    @property
    def database_ok(self) -> bool:
        return self._database_ok

    @property
    def spool_ok(self) -> bool:
        return self._spool_ok

    def stats(self) -> WriterStats:
        state = self.spool.state()
        oldest = [r[0].responded_at.timestamp() for r in self._held.values() if r]
        if self._queue:
            oldest.append(self._queue[0].responded_at.timestamp())
        if state.oldest is not None:
            oldest.append(state.oldest)
        return WriterStats(
            pid=os.getpid(),
            flush_interval_s=self.flush_interval,
            queue_depth=len(self._queue),
            queue_size=self.queue_size,
            inflight_rows=sum(len(r) for r in self._held.values()),
            oldest_unwritten_age_s=round(max(0.0, time.time() - min(oldest)), 3) if oldest else None,
            spool_ok=self._spool_ok,
            spool_files=state.files,
            spool_bytes=state.bytes,
            rows_written=self.rows_written,
            rows_spooled=self.rows_spooled,
            rows_replayed=self.rows_replayed,
            rows_dropped=self.rows_dropped,
            rows_rejected=self.rows_rejected,
            records_damaged=self.records_damaged,
            write_errors=self.write_errors,
            spool_errors=self.spool_errors,
            database_ok=self._database_ok,
            last_error=self.last_error,
            last_spool_error=self.last_spool_error,
        )

    # -- the background side ------------------------------------------------------------------
    async def _in_thread(self, fn, *args):  # type: ignore[no-untyped-def]
        return await asyncio.get_running_loop().run_in_executor(self._io, fn, *args)

    def _take(self, limit: int) -> list[RequestRecord]:
        count = min(limit, len(self._queue))
        return [self._queue.popleft() for _ in range(count)]

    def _hold(self, records: Sequence[RequestRecord]) -> int:
        self._held[id(records)] = records
        return id(records)

    async def _run(self) -> None:
        stuck = 0
        progress = True
        while True:
            if not progress:
                # Neither the database nor the spool took rows: wait a window (not for the next
                # submit, which a full queue would make immediate) instead of spinning.
                await asyncio.sleep(self.flush_interval)
            elif not self._stopping and len(self._queue) < self.batch_size:
                try:
                    await asyncio.wait_for(self._wake.wait(), timeout=self.flush_interval)
                except TimeoutError:
                    pass
            self._wake.clear()
            before, settled = len(self._queue), self._settled
            self._busy_tick = self._ticks
            try:
                await self._cycle()
            except Exception:  # the writer must outlive any bug in one cycle
                log.exception("row writer cycle failed; retrying")
                await asyncio.sleep(self.flush_interval)
            finally:
                self._busy_tick = None
            progress = not before or self._settled > settled
            if not self._stopping:
                continue
            if not self._queue:
                return
            if progress:
                stuck = 0
                continue
            stuck += 1
            if stuck >= DRAIN_ATTEMPTS:
                lost = len(self._queue)
                self._queue.clear()
                self.rows_dropped += lost
                log.critical("stopping with %d rows lost: neither the database (%s) nor the spool (%s) "
                             "would take them", lost, self.last_error, self.last_spool_error)
                return
            await asyncio.sleep(min(1.0, 5 * self.flush_interval))

    async def _cycle(self) -> None:
        now = time.monotonic()
        if not self._database_ok and not self._stopping and now - self._last_attempt >= RECONNECT_INTERVAL:
            self._last_attempt = now
            await self._probe()
        if not self._database_ok:
            # Database down: rows go to disk now rather than pile up in memory.
            await self._spool(self._take(len(self._queue)))
            return
        while self._queue:
            batch = self._take(self.batch_size)
            if not await self._insert(batch):
                await self._spool(self._take(len(self._queue)))
                return
            if self._stopping:
                continue
            # Over the bound (the database keeps up slower than traffic): the excess waits on disk.
            excess = len(self._queue) - self.queue_size
            if excess > 0:
                await self._spool(self._take(excess))
            break  # one batch per cycle keeps each cycle short; a full queue wakes us again
        if self._stopping or not self._database_ok:
            return
        if now - self._last_scan >= SPOOL_SCAN_INTERVAL:
            # Other processes' files (a worker that exited or was killed) wait for whoever looks.
            self._last_scan = now
            self._spool_pending = True
        if self._spool_pending:
            await self._replay()

    async def _probe(self) -> None:
        try:
            await asyncio.wait_for(self._prepare(), timeout=INSERT_TIMEOUT)
            await asyncio.wait_for(self.database.ping(), timeout=INSERT_TIMEOUT)
        except (DatabaseUnavailable, TimeoutError, OSError) as exc:
            self.last_error = _describe(exc)
            return
        except Exception as exc:  # reachable but not usable (e.g. a failing migration)
            self.last_error = _describe(exc)
            log.error("database reachable but not usable: %s", self.last_error)
            return
        log.warning("database reachable again; replaying spooled rows")
        self._database_ok = True
        self._spool_pending = True

    async def _insert(self, batch: list[RequestRecord]) -> bool:
        """True when the batch is settled (inserted, or refused rows set aside); False when the
        database is down, the batch then being in the spool (or, the spool failing, in memory)."""
        token = self._hold(batch)
        self._inflight, self._inflight_spooled = batch, False
        try:
            try:
                result = await asyncio.wait_for(self.database.insert_requests(batch), timeout=INSERT_TIMEOUT)
            except (DatabaseUnavailable, TimeoutError, OSError) as exc:
                self._mark_down(exc)
                async with self._spool_lock:  # the guard may be spooling this very batch
                    self._inflight = None
                    if not self._inflight_spooled:
                        await self._spool_unlocked(batch)
                return False
            except Exception as exc:
                # Not an outage: something about these rows.  Isolate them one by one so a single
                # bad row cannot block the rest; what the database refuses is set aside.
                self.write_errors += 1
                self.last_error = _describe(exc)
                log.error("inserting %d rows failed (%s); retrying one by one", len(batch), self.last_error)
                self._inflight = None
                refused = await self._insert_one_by_one(batch)
                if refused is None:
                    await self._spool(batch)  # the database went away meanwhile; replays are idempotent
                    return False
                await self._set_aside(refused)
                self._settled += len(batch) - len(refused)
                return True
            self.rows_written += result.inserted
            self._settled += len(batch)
            return True
        finally:
            self._inflight = None
            self._held.pop(token, None)

    async def _insert_one_by_one(self, records: Sequence[RequestRecord]) -> list[RequestRecord] | None:
        """The rows the database refuses; None when it became unreachable meanwhile."""
        refused = []
        for record in records:
            try:
                result = await asyncio.wait_for(self.database.insert_requests([record]), timeout=INSERT_TIMEOUT)
                self.rows_written += result.inserted
            except (DatabaseUnavailable, TimeoutError, OSError) as down:
                self._mark_down(down)
                return None
            except Exception as exc:
                self.last_error = _describe(exc)
                refused.append(record)
        return refused

    async def _set_aside(self, records: list[RequestRecord]) -> None:
        if not records:
            return
        self.rows_rejected += len(records)
        self._settled += len(records)
        try:
            path = await self._in_thread(self.spool.set_aside, records)
        except OSError as exc:
            self.rows_dropped += len(records)
            log.critical("%d rows refused by the database (%s) could not be kept either: %s",
                         len(records), self.last_error, exc)
            return
        log.error("%d rows refused by the database (%s) were kept in %s", len(records), self.last_error, path)

    def _mark_down(self, exc: BaseException) -> None:
        self.write_errors += 1
        self.last_error = _describe(exc)
        if self._database_ok:
            log.error("database unavailable, rows go to the spool until it returns: %s", self.last_error)
        self._database_ok = False
        self._last_attempt = time.monotonic()

    # -- the spool ----------------------------------------------------------------------------
    async def _spool(self, records: list[RequestRecord]) -> bool:
        if not records:
            return True
        token = self._hold(records)  # counted while waiting for the lock too
        try:
            async with self._spool_lock:
                return await self._spool_unlocked(records, hold=False)
        finally:
            self._held.pop(token, None)

    async def _spool_unlocked(self, records: list[RequestRecord], *, requeue: bool = True,
                              hold: bool = True) -> bool:
        """Append to the spool (caller holds the spool lock).  On failure the rows go back to the
        front of the queue (unless ``requeue`` is false), within the memory bound."""
        if not records:
            return True
        if self._spool_ok or self._stopping or time.monotonic() >= self._spool_retry_at:
            token = self._hold(records) if hold else None
            try:
                await self._in_thread(self.spool.append, records)
            except OSError as exc:
                self._spool_failed(exc)
            else:
                self._spool_works()
                self.rows_spooled += len(records)
                self._settled += len(records)
                self._spool_pending = True
                return True
            finally:
                if token is not None:
                    self._held.pop(token, None)
        if requeue:
            self._keep_in_memory(records)
        return False

    def _keep_in_memory(self, records: list[RequestRecord]) -> None:
        room = max(0, self.queue_size - len(self._queue))
        self._queue.extendleft(reversed(records[:room]))
        dropped = len(records) - room
        if dropped > 0:
            self.rows_dropped += dropped
            if self._dropped_logged == 0:
                log.critical("dropping rows: the database and the spool are both unavailable and the memory "
                             "queue is full (writer.queue_size=%d); %d dropped so far", self.queue_size,
                             self.rows_dropped)
                self._dropped_logged = self.rows_dropped

    def _spool_failed(self, exc: OSError) -> None:
        self.spool_errors += 1
        self.last_spool_error = f"{self.spool.directory}: {exc.strerror or exc}"
        self._spool_retry_at = time.monotonic() + SPOOL_RETRY_INTERVAL
        if self._spool_ok:
            self._spool_ok = False
            log.critical("cannot write the spool (%s): rows that cannot reach the database are held in memory, "
                         "at most writer.queue_size=%d, and are lost if the process stops; the gateway keeps "
                         "serving", self.last_spool_error, self.queue_size)

    def _spool_works(self) -> None:
        if not self._spool_ok:
            self._spool_ok = True
            log.warning("the spool %s is writable again", self.spool.directory)

    async def _check_spool(self) -> None:
        async with self._spool_lock:
            try:
                await self._in_thread(self.spool.check)
            except OSError as exc:
                self._spool_failed(exc)
            else:
                self._spool_works()

    # -- the guard: no row stays only in memory for long ---------------------------------------
    async def _guard_loop(self) -> None:
        next_check = 0.0
        tick = max(0.005, self.flush_interval / 2)
        while not self._guard_stop.is_set():
            try:
                now = time.monotonic()
                if now >= next_check:
                    await self._check_spool()
                    next_check = now + (SPOOL_CHECK_INTERVAL if self._spool_ok else SPOOL_RETRY_INTERVAL)
                await self._protect()
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
            async with self._spool_lock:
                if self._inflight is batch and not self._inflight_spooled:
                    self._inflight_spooled = await self._spool_unlocked(list(batch), requeue=False, hold=False)
        if self._queue:
            # Rows the stuck writer cannot reach wait on disk instead.
            await self._spool(self._take(len(self._queue)))

    def _log_status(self) -> None:
        now = time.monotonic()
        # stats() lists the spool directory: once a second, not on every guard tick.
        if now - self._last_status_check < STATUS_CHECK_INTERVAL:
            return
        self._last_status_check = now
        stats = self.stats()
        unhealthy = (not stats.database_ok or not stats.spool_ok or stats.spool_bytes > 0
                     or stats.queue_depth > self.batch_size or stats.rows_dropped > self._dropped_logged)
        if unhealthy:
            if now - self._last_status_log >= STATUS_LOG_INTERVAL:
                self._last_status_log = now
                log.warning("row writer: %s", stats.summary())
                self._dropped_logged = max(self._dropped_logged, stats.rows_dropped)
        elif self._unhealthy:
            self._last_status_log = now
            log.info("row writer caught up: %s", stats.summary())
        self._unhealthy = unhealthy

    async def _replay(self) -> None:
        self._spool_pending = False  # an append from now on raises it again
        async with self._spool_lock:
            # Our own file too: rows spooled while the database was up (overflow, a slow insert)
            # must not wait for a restart.
            await self._in_thread(self.spool.rotate)
        for path in await self._in_thread(self.spool.unowned_files):
            claimed = await self._in_thread(self.spool.claim, path)
            if claimed is None:
                continue
            records = claimed.result.records
            refused: list[RequestRecord] = []
            try:
                for start in range(0, len(records), self.batch_size):
                    chunk = records[start:start + self.batch_size]
                    try:
                        result = await asyncio.wait_for(self.database.insert_requests(chunk),
                                                        timeout=INSERT_TIMEOUT)
                    except (DatabaseUnavailable, TimeoutError, OSError):
                        raise
                    except Exception as exc:
                        self.write_errors += 1
                        self.last_error = _describe(exc)
                        log.error("replaying %d rows from %s failed (%s); retrying one by one",
                                  len(chunk), path.name, self.last_error)
                        bad = await self._insert_one_by_one(chunk)
                        if bad is None:
                            raise DatabaseUnavailable(self.last_error or "database unavailable") from None
                        refused.extend(bad)
                    else:
                        self.rows_written += result.inserted
                    self.rows_replayed += len(chunk)
            except (DatabaseUnavailable, TimeoutError, OSError) as exc:
                await self._in_thread(claimed.release)
                self._mark_down(exc)
                self._spool_pending = True
                return
            except BaseException:
                await self._in_thread(claimed.release)
                self._spool_pending = True
                raise
            await self._set_aside(refused)
            kept = await self._in_thread(claimed.done)
            self.records_damaged += claimed.result.damaged
            if kept is not None:
                log.warning("replayed %d spooled rows from %s; %d damaged records skipped, file kept as %s",
                            len(records), path.name, claimed.result.damaged, kept.name)
            else:
                log.info("replayed %d spooled rows from %s", len(records), path.name)
            if len(self._queue) >= self.batch_size:
                self._spool_pending = True
                return  # fresh rows first; the rest of the spool next cycle


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
