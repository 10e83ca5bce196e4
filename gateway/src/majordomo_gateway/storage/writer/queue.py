"""The writer's memory: rows submitted and not yet taken, and rows taken and not yet settled."""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Sequence

from majordomo_gateway.storage.records import RequestRecord
from majordomo_gateway.storage.writer.stats import Counters

log = logging.getLogger("majordomo.writer")


class RowQueue:
    """Rows in memory.  ``submit`` wakes the batcher once a batch is full; ``held`` tracks rows taken
    off the queue (a batch being inserted, rows waiting for the spool) so stats still count them."""

    def __init__(self, counters: Counters, *, batch_size: int, queue_size: int) -> None:
        self.counters = counters
        self.batch_size = batch_size
        self.queue_size = queue_size
        self.rows: deque[RequestRecord] = deque()
        self.wake = asyncio.Event()
        self._held: dict[int, Sequence[RequestRecord]] = {}
        self.dropped_logged = 0

    def __len__(self) -> int:
        return len(self.rows)

    def submit(self, record: RequestRecord) -> None:
        self.rows.append(record)
        if len(self.rows) >= self.batch_size:
            self.wake.set()

    def take(self, limit: int) -> list[RequestRecord]:
        rows = self.rows
        return [rows.popleft() for _ in range(min(limit, len(rows)))]

    def take_all(self) -> list[RequestRecord]:
        return self.take(len(self.rows))

    def hold(self, records: Sequence[RequestRecord]) -> int:
        self._held[id(records)] = records
        return id(records)

    def release(self, token: int) -> None:
        self._held.pop(token, None)

    def held_rows(self) -> int:
        return sum(len(r) for r in self._held.values())

    def oldest_responses(self) -> list[float]:
        """Epoch seconds of the oldest row of each held batch and of the queue."""
        oldest = [r[0].responded_at.timestamp() for r in self._held.values() if r]
        if self.rows:
            oldest.append(self.rows[0].responded_at.timestamp())
        return oldest

    def keep_in_memory(self, records: list[RequestRecord]) -> None:
        """Rows no store would take go back to the front of the queue, within the bound; the rest
        are dropped and counted."""
        room = max(0, self.queue_size - len(self.rows))
        self.rows.extendleft(reversed(records[:room]))
        dropped = len(records) - room
        if dropped > 0:
            self.counters.rows_dropped += dropped
            if self.dropped_logged == 0:
                log.critical("dropping rows: the database and the spool are both unavailable and the memory "
                             "queue is full (writer.queue_size=%d); %d dropped so far", self.queue_size,
                             self.counters.rows_dropped)
                self.dropped_logged = self.counters.rows_dropped

    def drop_all(self) -> int:
        lost = len(self.rows)
        self.rows.clear()
        self.counters.rows_dropped += lost
        return lost
