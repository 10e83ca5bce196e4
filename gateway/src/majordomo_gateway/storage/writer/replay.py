"""Replaying the spool: files no live process owns (ours once rotated), oldest first, into the database."""

from __future__ import annotations

import logging

from majordomo_gateway.storage.errors import DatabaseUnavailable
from majordomo_gateway.storage.records import RequestRecord
from majordomo_gateway.storage.writer.inserts import Inserter
from majordomo_gateway.storage.writer.outage import OUTAGE_ERRORS
from majordomo_gateway.storage.writer.queue import RowQueue
from majordomo_gateway.storage.writer.spooling import SpoolKeeper
from majordomo_gateway.storage.writer.stats import describe

log = logging.getLogger("majordomo.writer")

# How often the spool directory is scanned for files left by other (exited, killed) processes.
SPOOL_SCAN_INTERVAL = 5.0


class Replayer:
    def __init__(self, keeper: SpoolKeeper, inserter: Inserter, queue: RowQueue) -> None:
        self.keeper = keeper
        self.inserter = inserter
        self.queue = queue
        self._last_scan = 0.0

    async def maybe_replay(self, now: float) -> None:
        if now - self._last_scan >= SPOOL_SCAN_INTERVAL:
            # Other processes' files (a worker that exited or was killed) wait for whoever looks.
            self._last_scan = now
            self.keeper.pending = True
        if self.keeper.pending:
            await self.replay()

    async def replay(self) -> None:
        keeper, spool, counters = self.keeper, self.keeper.spool, self.keeper.counters
        keeper.pending = False  # an append from now on raises it again
        async with keeper.lock:
            # Our own file too: rows spooled while the database was up (overflow, a slow insert)
            # must not wait for a restart.
            await keeper.in_thread(spool.rotate)
        for path in await keeper.in_thread(spool.unowned_files):
            claimed = await keeper.in_thread(spool.claim, path)
            if claimed is None:
                continue
            records = claimed.result.records
            refused: list[RequestRecord] = []
            batch_size = self.queue.batch_size
            try:
                for start in range(0, len(records), batch_size):
                    chunk = records[start:start + batch_size]
                    try:
                        result = await self.inserter.insert(chunk)
                    except OUTAGE_ERRORS:
                        raise
                    except Exception as exc:
                        counters.write_errors += 1
                        counters.last_error = describe(exc)
                        log.error("replaying %d rows from %s failed (%s); retrying one by one",
                                  len(chunk), path.name, counters.last_error)
                        bad = await self.inserter.one_by_one(chunk)
                        if bad is None:
                            raise DatabaseUnavailable(counters.last_error or "database unavailable") from None
                        refused.extend(bad)
                    else:
                        counters.rows_written += result.inserted
                        counters.duplicates += result.duplicates
                    counters.rows_replayed += len(chunk)
            except OUTAGE_ERRORS as exc:
                await keeper.in_thread(claimed.release)
                self.inserter.outage.mark_down(exc)
                keeper.pending = True
                return
            except BaseException:
                await keeper.in_thread(claimed.release)
                keeper.pending = True
                raise
            await keeper.set_aside(refused)
            kept = await keeper.in_thread(claimed.done)
            counters.records_damaged += claimed.result.damaged
            if kept is not None:
                log.warning("replayed %d spooled rows from %s; %d damaged records skipped, file kept as %s",
                            len(records), path.name, claimed.result.damaged, kept.name)
            else:
                log.info("replayed %d spooled rows from %s", len(records), path.name)
            if len(self.queue) >= batch_size:
                keeper.pending = True
                return  # fresh rows first; the rest of the spool next cycle
