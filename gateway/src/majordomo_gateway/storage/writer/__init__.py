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

The parts, each tested on its own: ``queue`` (memory, its bound), ``outage`` (down/up and the
reconnection probe), ``inserts`` (a batch, and one by one), ``spooling`` (appends off the event
loop, a spool that fails), ``replay`` (the spool back into the database), ``stats``; ``row_writer``
runs them: the batching loop (group commit) and the guard.
"""

from __future__ import annotations

from majordomo_gateway.storage.writer.outage import INSERT_TIMEOUT, RECONNECT_INTERVAL, Prepare
from majordomo_gateway.storage.writer.replay import SPOOL_SCAN_INTERVAL
from majordomo_gateway.storage.writer.row_writer import (
    DRAIN_ATTEMPTS,
    STATUS_CHECK_INTERVAL,
    STATUS_LOG_INTERVAL,
    RowWriter,
)
from majordomo_gateway.storage.writer.spooling import SPOOL_CHECK_INTERVAL, SPOOL_RETRY_INTERVAL
from majordomo_gateway.storage.writer.stats import WriterStats

__all__ = [
    "DRAIN_ATTEMPTS", "INSERT_TIMEOUT", "RECONNECT_INTERVAL", "SPOOL_CHECK_INTERVAL", "SPOOL_RETRY_INTERVAL",
    "SPOOL_SCAN_INTERVAL", "STATUS_CHECK_INTERVAL", "STATUS_LOG_INTERVAL", "Prepare", "RowWriter", "WriterStats",
]
