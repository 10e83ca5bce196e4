"""Scenario 2: PostgreSQL answers, but inserts hang (a lock held on ``llm_requests``).

``SELECT 1`` still works, so the database looks healthy; only the writer's inserts wait.  The
memory queue must stay within ``writer.queue_size`` (the excess goes to the spool while the insert
is pending), RSS must stay bounded, and nothing may be lost once the lock is released.
"""

from __future__ import annotations

import asyncio
import time

import asyncpg
import pytest

from tests.support.reliability import Load, Watcher, account, wait_settled


async def _locked(make_gateway, record_result, *, hold: float, queue_size: int, concurrency: int) -> None:
    batch_size = 200
    flush = 0.1
    gw = await make_gateway("postgres", writer_flush_interval=str(flush), writer_queue_size=str(queue_size),
                            writer_batch_size=str(batch_size))
    watcher = Watcher([gw], interval=0.2).start()
    async with Load(gw.url, gw.key) as load:
        await load.closed_loop(4, duration=5, max_requests=8)
        await asyncio.sleep(0.3)
        rss_before = gw.rss_mb()
        running = asyncio.create_task(load.closed_loop(concurrency, duration=hold + 2, max_requests=500_000))
        await asyncio.sleep(1)
        locker = await asyncpg.connect(gw.database_url, timeout=10)
        transaction = locker.transaction()
        await transaction.start()
        await locker.execute("LOCK TABLE llm_requests IN ACCESS EXCLUSIVE MODE")
        locked_at = time.monotonic()
        await asyncio.sleep(hold)
        _, during = await gw.readyz()
        await transaction.rollback()
        await locker.close()
        released_at = time.monotonic()
        result = await running
    settle = await wait_settled([gw], timeout=60)
    await watcher.stop()
    accounting = await account(gw, load.outcomes)
    locked = [s for s in watcher.samples if locked_at - watcher._t0 <= s.t <= released_at - watcher._t0]
    peak_queue = max((s.body.get("writer", {}).get("queue_depth", 0) for s in locked if s.body), default=0)
    peak_rss = max((s.rss_mb for s in locked), default=0.0)
    _, after = await gw.readyz()

    record_result(lock_held_s=hold, queue_size=queue_size, batch_size=batch_size, **accounting.as_dict(),
                  statuses=result.statuses(), rate_per_s=result.rate(), latency_ms=result.latency_ms(),
                  peak_queue_depth_while_locked=peak_queue, rss_before_mb=rss_before,
                  peak_rss_while_locked_mb=peak_rss, peak_spool_bytes=watcher.max_writer("spool_bytes"),
                  oldest_unwritten_age_s_while_locked=during["writer"]["oldest_unwritten_age_s"],
                  rows_spooled=after["writer"]["rows_spooled"], settle_s=settle)
    # The bound: what is queued never exceeds queue_size by more than what arrives between two
    # checks of the writer (one flush interval, ample at this rate) plus one batch in flight.
    assert peak_queue <= queue_size + batch_size + 1000, (peak_queue, queue_size)
    assert after["writer"]["rows_spooled"] > 0, after
    assert during["writer"]["oldest_unwritten_age_s"] and during["writer"]["oldest_unwritten_age_s"] > 1, during
    assert not accounting.lost, [o.seq for o in accounting.lost[:10]]
    assert accounting.duplicated == accounting.foreign == accounting.mismatched == 0, accounting.as_dict()
    assert all(o.status == 200 for o in result.outcomes), result.statuses()


async def test_table_locked_a_few_seconds(make_gateway, record_result) -> None:
    await _locked(make_gateway, record_result, hold=3, queue_size=1000, concurrency=8)


@pytest.mark.slow
@pytest.mark.timeout(300)
async def test_table_locked_sixty_seconds(make_gateway, record_result) -> None:
    await _locked(make_gateway, record_result, hold=60, queue_size=20_000, concurrency=16)
