"""Scenarios 4 and 5: the gateway stopped under load, politely (SIGTERM) and not (SIGKILL).

SIGTERM: uvicorn stops accepting, lets in-flight requests (slow streams) finish, then the writer
drains its queue to the database (or, the database being down, to the spool) before the process
exits.  After a restart nothing is missing.

SIGKILL: nothing runs at exit.  What was committed or fsync'ed to the spool survives; only rows
still in memory are lost, and the writer keeps no row in memory for more than about two
group-commit windows (``writer.flush_interval``): one window waiting for the next batch, and, if
the database has not answered within another window, the row goes to the spool.  After a
restart the spool is replayed, without duplicates.
"""

from __future__ import annotations

import asyncio
import re
import time

import asyncpg
import pytest

from tests.support.reliability import Load, PgCluster, Watcher, account, log_lines, spool_files, wait_settled


def assert_clean_exit(gw, code: int | None) -> None:
    # uvicorn re-raises SIGTERM once its graceful shutdown is done, so the exit status is -15.
    assert code in (0, -15), code
    assert "Application shutdown complete" in gw.log_text(), gw.log_text()[-3000:]


SLOW_STREAM = {"X-Mock-Scenario": "slow", "X-Mock-Chunks": "20", "X-Mock-Delay-Ms": "60"}  # ~1.3 s per stream


@pytest.mark.parametrize("kind", [pytest.param("sqlite", marks=pytest.mark.slow), "postgres"])
async def test_sigterm_with_open_streams_finishes_them_and_drains(make_gateway, kind: str, record_result) -> None:
    gw = await make_gateway(kind, writer_flush_interval="0.1")
    async with Load(gw.url, gw.key, stream=True, mock_headers=SLOW_STREAM) as load:
        running = asyncio.create_task(load.closed_loop(24, duration=30, max_requests=100_000))
        await asyncio.sleep(2)  # streams open at every stage of their life
        in_flight = sum(1 for o in load.outcomes if not o.ended)
        code, exit_s = await asyncio.to_thread(gw.terminate)
        load.stop()
        result = await running
    assert_clean_exit(gw, code)
    # Nothing is left for a restart to do: the queue reached the database before exit.
    assert not spool_files(gw.workdir.parent / "spool"), "the drain left rows in the spool"
    accounting = await account(gw, load.outcomes)
    answered = [o for o in result.outcomes if o.answered]
    cut = [o for o in answered if not o.complete]
    record_result(database=kind, streams_open_at_sigterm=in_flight, exit_code=code, exit_s=exit_s,
                  **accounting.as_dict(), streams_complete=len(answered) - len(cut), streams_cut=len(cut),
                  statuses=result.statuses())
    assert in_flight >= 10
    assert not cut, "uvicorn's graceful shutdown (30 s) should let 1.3 s streams finish"
    assert not accounting.lost and accounting.duplicated == accounting.mismatched == 0, accounting.as_dict()
    # After the restart nothing is missing either (and nothing is replayed twice).
    gw.start()
    await wait_settled([gw], timeout=30)
    assert (await account(gw, load.outcomes)).as_dict() == accounting.as_dict()


async def test_sigterm_while_postgres_is_down_drains_to_the_spool(make_gateway, pg_cluster: PgCluster,
                                                                  record_result) -> None:
    gw = await make_gateway("postgres", writer_flush_interval="0.1")
    spool = gw.workdir.parent / "spool"
    async with Load(gw.url, gw.key, stream=True, mock_headers=SLOW_STREAM) as load:
        running = asyncio.create_task(load.closed_loop(16, duration=30, max_requests=100_000))
        await asyncio.sleep(2)
        pg_cluster.stop("immediate")
        await asyncio.sleep(0.5)
        code, exit_s = await asyncio.to_thread(gw.terminate)
        load.stop()
        await running
    assert_clean_exit(gw, code)
    assert spool_files(spool), "rows finished during the outage should be in the spool"
    pg_cluster.start()
    gw.start()
    settle = await wait_settled([gw], timeout=30)
    accounting = await account(gw, load.outcomes)
    _, ready = await gw.readyz()
    record_result(exit_code=code, exit_s=exit_s, **accounting.as_dict(), replay_s=settle,
                  rows_replayed=ready["writer"]["rows_replayed"])
    assert not accounting.lost and accounting.duplicated == accounting.mismatched == 0, accounting.as_dict()
    assert not spool_files(spool)


async def _sigkill(make_gateway, record_result, kind: str, *, flush: float, concurrency: int, kills: int,
                   duration: float) -> None:
    gw = await make_gateway(kind, writer_flush_interval=str(flush))
    spool = gw.workdir.parent / "spool"
    all_outcomes = []
    lost_ages: list[float] = []
    per_kill = []
    for round_ in range(kills):
        async with Load(gw.url, gw.key, run=f"k{round_}") as load:
            running = asyncio.create_task(load.closed_loop(concurrency, duration=duration + 5, max_requests=500_000))
            await asyncio.sleep(duration)
            killed_at = time.monotonic()
            gw.kill()
            load.stop()
            await running
        all_outcomes.extend(load.outcomes)
        gw.start()
        await wait_settled([gw], timeout=30)
        accounting = await account(gw, load.outcomes)
        window = [o for o in load.outcomes if o.answered and o.ended >= killed_at - flush]
        ages = [round(killed_at - o.ended, 3) for o in accounting.lost]
        lost_ages.extend(ages)
        per_kill.append({"answered": accounting.answered, "lost": len(accounting.lost),
                         "answered_in_last_window": len(window), "oldest_lost_age_s": max(ages, default=None)})
    accounting = await account(gw, all_outcomes)
    replayed = sum(int(m.group(1)) for line in log_lines(gw, "spooled rows from")
                   if (m := re.search(r"replayed (\d+) spooled rows", line)))
    record_result(database=kind, flush_interval_s=flush, kills=kills, **accounting.as_dict(), per_kill=per_kill,
                  oldest_lost_age_s=max(lost_ages, default=None), rows_replayed_after_restarts=replayed)
    assert accounting.duplicated == accounting.foreign == accounting.mismatched == 0, accounting.as_dict()
    # What is lost was answered within the last two windows before the kill (a row waits at most
    # one window for its batch, and at most one more before the writer spools it), plus the
    # scheduling slack of a loaded 2-CPU machine.
    assert max(lost_ages, default=0) <= 2 * flush + 0.25, per_kill
    assert not spool_files(spool)


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
async def test_sigkill_under_load_loses_at_most_the_last_window(make_gateway, kind: str, record_result) -> None:
    # Two windows, to show the bound follows writer.flush_interval.
    await _sigkill(make_gateway, record_result, kind, flush=0.05 if kind == "sqlite" else 0.1, concurrency=8,
                   kills=1, duration=2)


async def test_sigkill_while_the_table_is_locked(make_gateway, record_result) -> None:
    """The hard case: the database takes rows but never commits them.  Rows must not sit in memory
    waiting for it; they go to the spool within about two windows, and a restart replays them."""
    flush = 0.1
    gw = await make_gateway("postgres", writer_flush_interval=str(flush))
    spool = gw.workdir.parent / "spool"
    async with Load(gw.url, gw.key) as load:
        await load.closed_loop(4, duration=5, max_requests=8)
        locker = await asyncpg.connect(gw.database_url, timeout=10)
        transaction = locker.transaction()
        await transaction.start()
        await locker.execute("LOCK TABLE llm_requests IN ACCESS EXCLUSIVE MODE")
        running = asyncio.create_task(load.closed_loop(8, duration=10, max_requests=500_000))
        await asyncio.sleep(2)
        killed_at = time.monotonic()
        gw.kill()
        load.stop()
        await running
        await transaction.rollback()
        await locker.close()
    assert spool_files(spool), "two seconds of rows are not in the spool"
    gw.start()
    await wait_settled([gw], timeout=60)
    accounting = await account(gw, load.outcomes)
    ages = [round(killed_at - o.ended, 3) for o in accounting.lost]
    record_result(flush_interval_s=flush, **accounting.as_dict(), oldest_lost_age_s=max(ages, default=None))
    assert accounting.duplicated == accounting.foreign == accounting.mismatched == 0, accounting.as_dict()
    assert max(ages, default=0) <= 2 * flush + 0.25, sorted(ages)[-10:]


@pytest.mark.slow
@pytest.mark.timeout(600)
async def test_sigkill_repeatedly_under_load(make_gateway, record_result) -> None:
    await _sigkill(make_gateway, record_result, "postgres", flush=0.1, concurrency=16, kills=10, duration=6)


@pytest.mark.slow
@pytest.mark.timeout(300)
async def test_sigkill_during_outage_then_replay(make_gateway, pg_cluster: PgCluster, record_result) -> None:
    """Killed while the database is down: what was spooled comes back after both restart."""
    gw = await make_gateway("postgres", writer_flush_interval="0.1")
    spool = gw.workdir.parent / "spool"
    watcher = Watcher([gw]).start()
    async with Load(gw.url, gw.key) as load:
        await load.closed_loop(4, duration=5, max_requests=20)
        running = asyncio.create_task(load.closed_loop(16, duration=40, max_requests=500_000))
        await asyncio.sleep(2)
        pg_cluster.stop("immediate")
        await asyncio.sleep(15)
        killed_at = time.monotonic()
        gw.kill()
        load.stop()
        await running
    await watcher.stop()
    spooled = sum(p.stat().st_size for p in spool_files(spool))
    pg_cluster.start()
    gw.start()
    settle = await wait_settled([gw], timeout=120)
    accounting = await account(gw, load.outcomes)
    ages = [round(killed_at - o.ended, 3) for o in accounting.lost]
    _, ready = await gw.readyz()
    record_result(**accounting.as_dict(), spool_bytes_at_kill=spooled, replay_s=settle,
                  rows_replayed=ready["writer"]["rows_replayed"], oldest_lost_age_s=max(ages, default=None),
                  peak_rss_mb=watcher.peak_rss_mb())
    assert accounting.duplicated == accounting.foreign == accounting.mismatched == 0, accounting.as_dict()
    assert max(ages, default=0) <= 0.45, sorted(ages)[-10:]
