"""The row writer: the only thing on the request path's side that talks to the database.

Requests hand finished rows to ``submit`` (no I/O, no await).  A background task batches them
every ``flush_interval`` (the group-commit window: the most a SIGKILL can lose) or as soon as a
batch fills, and inserts each batch in one round trip.  When the database is down or too slow,
or the memory queue is over its bound, batches go to the durable spool instead; once the
database answers again the spool is replayed.  Row ids make every replay idempotent.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from majordomo_gateway.storage.database import Database, DatabaseUnavailable
from majordomo_gateway.storage.records import RequestRecord
from majordomo_gateway.storage.spool import Spool

log = logging.getLogger("majordomo.writer")

# A batch that has not committed after this long is presumed stuck: it goes to the spool (a
# late commit is harmless, replays skip rows already present).
INSERT_TIMEOUT = 10.0
RECONNECT_INTERVAL = 1.0


@dataclass(slots=True)
class WriterStats:
    queue_depth: int
    spool_bytes: int
    oldest_unwritten_age_s: float | None
    rows_written: int
    rows_spooled: int
    rows_replayed: int
    write_errors: int
    spool_errors: int
    database_ok: bool
    last_error: str | None

    def as_dict(self) -> dict[str, object]:
        return {name: getattr(self, name) for name in self.__slots__}  # type: ignore[attr-defined]


class RowWriter:
    def __init__(
        self,
        database: Database,
        spool: Spool,
        *,
        batch_size: int = 500,
        flush_interval: float = 0.1,
        queue_size: int = 20_000,
    ) -> None:
        self.database = database
        self.spool = spool
        self.batch_size = batch_size
        self.flush_interval = flush_interval
        self.queue_size = queue_size
        self._queue: deque[RequestRecord] = deque()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        # Spool I/O (write + fsync) is blocking; one thread keeps it off the event loop and ordered.
        self._io = ThreadPoolExecutor(max_workers=1, thread_name_prefix="majordomo-spool")
        self._database_ok = True
        self._spool_pending = True  # replay whatever an earlier run left behind
        self._last_attempt = 0.0
        self.rows_written = 0
        self.rows_spooled = 0
        self.rows_replayed = 0
        self.write_errors = 0
        self.spool_errors = 0
        self.last_error: str | None = None

    # -- the request side -------------------------------------------------------------------
    def submit(self, record: RequestRecord) -> None:
        """Hand over a finished row.  Never blocks, never raises."""
        self._queue.append(record)
        if len(self._queue) >= self.batch_size:
            self._wake.set()

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="majordomo-row-writer")

    async def close(self) -> None:
        """Drain: everything queued reaches the database or, failing that, the spool."""
        self._stopping = True
        self._wake.set()
        if self._task is not None:
            await self._task
            self._task = None
        await self._in_thread(self.spool.close)
        self._io.shutdown(wait=True)

    @property
    def database_ok(self) -> bool:
        return self._database_ok

    def stats(self) -> WriterStats:
        oldest = self._queue[0].responded_at.timestamp() if self._queue else None
        return WriterStats(
            queue_depth=len(self._queue),
            spool_bytes=self.spool.pending_bytes(),
            oldest_unwritten_age_s=None if oldest is None else round(time.time() - oldest, 3),
            rows_written=self.rows_written,
            rows_spooled=self.rows_spooled,
            rows_replayed=self.rows_replayed,
            write_errors=self.write_errors,
            spool_errors=self.spool_errors,
            database_ok=self._database_ok,
            last_error=self.last_error,
        )

    # -- the background side ------------------------------------------------------------------
    async def _in_thread(self, fn, *args):  # type: ignore[no-untyped-def]
        return await asyncio.get_running_loop().run_in_executor(self._io, fn, *args)

    def _take(self, limit: int) -> list[RequestRecord]:
        count = min(limit, len(self._queue))
        return [self._queue.popleft() for _ in range(count)]

    async def _run(self) -> None:
        while True:
            if not self._stopping and len(self._queue) < self.batch_size:
                try:
                    await asyncio.wait_for(self._wake.wait(), timeout=self.flush_interval)
                except TimeoutError:
                    pass
            self._wake.clear()
            try:
                await self._cycle()
            except Exception:  # the writer must outlive any bug in one cycle
                log.exception("row writer cycle failed; retrying")
                await asyncio.sleep(self.flush_interval)
            if self._stopping and not self._queue:
                return

    async def _cycle(self) -> None:
        if not self._database_ok and not self._stopping:
            now = time.monotonic()
            if now - self._last_attempt >= RECONNECT_INTERVAL:
                self._last_attempt = now
                await self._probe()
        if not self._database_ok:
            # Database down: rows go to disk now rather than pile up in memory.
            await self._spool(self._take(len(self._queue)))
            return
        while self._queue:
            batch = self._take(self.batch_size)
            if not await self._insert(batch):
                await self._spool(batch + self._take(len(self._queue)))
                return
            if self._stopping:
                continue
            # Over the bound (the database keeps up slower than traffic): the excess waits on disk.
            excess = len(self._queue) - self.queue_size
            if excess > 0:
                await self._spool(self._take(excess))
            break  # one batch per cycle keeps each cycle short; a full queue wakes us again
        if self._spool_pending and self._database_ok and not self._stopping:
            await self._replay()

    async def _probe(self) -> None:
        try:
            await asyncio.wait_for(self.database.ping(), timeout=INSERT_TIMEOUT)
        except (DatabaseUnavailable, TimeoutError, OSError) as exc:
            self.last_error = str(exc)
            return
        log.warning("database reachable again; replaying spooled rows")
        self._database_ok = True
        self._spool_pending = True
        # Close our spool file so that replay can claim it.
        await self._in_thread(self.spool.rotate)

    async def _insert(self, batch: Sequence[RequestRecord]) -> bool:
        try:
            result = await asyncio.wait_for(self.database.insert_requests(batch), timeout=INSERT_TIMEOUT)
        except (DatabaseUnavailable, TimeoutError, OSError) as exc:
            self._mark_down(exc)
            return False
        except Exception as exc:
            # Not an outage: something about these rows.  Isolate them one by one so a single bad
            # row cannot block the rest; what still fails waits in the spool for an operator.
            self.write_errors += 1
            self.last_error = f"{type(exc).__name__}: {exc}"
            log.error("inserting %d rows failed (%s); retrying one by one", len(batch), self.last_error)
            failed = []
            for record in batch:
                try:
                    result = await self.database.insert_requests([record])
                    self.rows_written += result.inserted
                except (DatabaseUnavailable, TimeoutError, OSError) as down:
                    self._mark_down(down)
                    return False
                except Exception:
                    failed.append(record)
            if failed:
                log.error("%d rows rejected by the database were kept in the spool", len(failed))
                await self._spool(failed)
            return True
        self.rows_written += result.inserted
        return True

    def _mark_down(self, exc: BaseException) -> None:
        self.write_errors += 1
        self.last_error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        if self._database_ok:
            log.error("database unavailable, rows go to the spool until it returns: %s", self.last_error)
        self._database_ok = False
        self._last_attempt = time.monotonic()

    async def _spool(self, records: list[RequestRecord]) -> None:
        if not records:
            return
        try:
            await self._in_thread(self.spool.append, records)
        except OSError as exc:
            # Disk full or unwritable: keep the rows in memory (bounded) and keep serving; the
            # choice and its limits are documented in docs/reliability.md.
            self.spool_errors += 1
            self.last_error = f"spool {self.spool.directory}: {exc}"
            log.error("cannot write the spool (%s); %d rows kept in memory", exc, len(records))
            room = max(0, self.queue_size - len(self._queue))
            kept = records[:room]
            self._queue.extendleft(reversed(kept))
            if len(records) > room:
                log.critical("dropping %d rows: database down, spool unwritable, memory queue full",
                             len(records) - room)
            return
        self.rows_spooled += len(records)
        self._spool_pending = True

    async def _replay(self) -> None:
        for path in await self._in_thread(self.spool.unowned_files):
            claimed = await self._in_thread(self.spool.claim, path)
            if claimed is None:
                continue
            records = claimed.result.records
            try:
                for start in range(0, len(records), self.batch_size):
                    chunk = records[start:start + self.batch_size]
                    result = await asyncio.wait_for(self.database.insert_requests(chunk), timeout=INSERT_TIMEOUT)
                    self.rows_written += result.inserted
                    self.rows_replayed += len(chunk)
            except (DatabaseUnavailable, TimeoutError, OSError) as exc:
                await self._in_thread(claimed.release)
                self._mark_down(exc)
                return
            except BaseException:
                await self._in_thread(claimed.release)
                raise
            await self._in_thread(claimed.done)
            log.info("replayed %d spooled rows from %s (%d damaged records skipped)",
                     len(records), path.name, claimed.result.damaged)
            if self._queue and len(self._queue) >= self.batch_size:
                return  # fresh rows first; the rest of the spool next cycle
        self._spool_pending = False
