"""Inserting rows, with the one-by-one fallback that keeps a bad row from blocking a batch."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence

from majordomo_gateway.storage.database import RequestLog
from majordomo_gateway.storage.records import InsertResult, RequestRecord
from majordomo_gateway.storage.writer.outage import INSERT_TIMEOUT, OUTAGE_ERRORS, Outage
from majordomo_gateway.storage.writer.stats import Counters, describe

#: told of every batch once the database has committed it (the budget guard forgets its own
#: copy of their spend once its next ledger read includes them: budgets/guard.py)
Committed = Callable[[Sequence[RequestRecord]], None]


class Inserter:
    def __init__(self, database: RequestLog, outage: Outage, counters: Counters) -> None:
        self.database = database
        self.outage = outage
        self.counters = counters
        self.on_committed: Committed | None = None

    async def insert(self, records: Sequence[RequestRecord]) -> InsertResult:
        """One round trip; raises what the database raised, or TimeoutError when it is stuck."""
        result = await asyncio.wait_for(self.database.insert_requests(records), timeout=INSERT_TIMEOUT)
        if self.on_committed is not None:
            self.on_committed(records)
        return result

    async def one_by_one(self, records: Sequence[RequestRecord]) -> list[RequestRecord] | None:
        """The rows the database refuses; None when it became unreachable meanwhile (marked down)."""
        refused = []
        for record in records:
            try:
                result = await self.insert([record])
                self.counters.rows_written += result.inserted
                self.counters.duplicates += result.duplicates
            except OUTAGE_ERRORS as down:
                self.outage.mark_down(down)
                return None
            except Exception as exc:
                self.counters.last_error = describe(exc)
                refused.append(record)
        return refused
