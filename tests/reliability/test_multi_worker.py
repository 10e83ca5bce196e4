"""Scenario 8: several gateway processes share one PostgreSQL database and one spool directory.

Each process appends to its own spool file under an exclusive ``flock``; a file whose lock can be
taken belongs to nobody (its writer exited or died) and is replayed by whichever process takes
it.  Nothing may be lost or replayed twice, whether the workers are uvicorn's (``--workers 2``)
or independent processes on different ports.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
import uuid

import aiohttp
import pytest

from tests.support.reliability import (
    CHAT,
    OPENAI_KEY,
    SEQ_HEADER,
    WARM,
    Load,
    PgCluster,
    Watcher,
    account,
    spool_files,
    wait_settled,
)


async def _warm_every_worker(url: str, key: str, attempts: int = 60, workers: int | None = None) -> set[int]:
    """Fresh connections land on whichever worker accepts first: enough of them reach all workers,
    so each one's key cache knows the key before the database goes away."""
    pids: set[int] = set()
    headers = {"X-Majordomo-Key": key, "Authorization": f"Bearer {OPENAI_KEY}", "Connection": "close"}
    for attempt in range(attempts):
        async with aiohttp.ClientSession() as session:
            async with session.post(url + "/v1/chat/completions", json=CHAT,
                                    headers={**headers, SEQ_HEADER: f"{WARM}{uuid.uuid4().hex}"}) as response:
                assert response.status == 200
            async with session.get(url + "/readyz", headers={"Connection": "close"}) as response:
                pids.add((await response.json())["writer"]["pid"])
        if workers is not None and len(pids) >= workers and attempt >= 10:
            break
    return pids


async def test_two_uvicorn_workers_share_spool_through_an_outage_and_a_worker_kill(
        make_gateway, pg_cluster: PgCluster, record_result) -> None:
    gw = await make_gateway("postgres", server_workers="2", writer_flush_interval="0.1")
    spool = gw.workdir.parent / "spool"
    await asyncio.sleep(1)  # both workers up
    pids = await _warm_every_worker(gw.url, gw.key, attempts=80, workers=2)
    assert len(pids) == 2, pids
    watcher = Watcher([gw]).start()
    async with Load(gw.url, gw.key) as load:
        running = asyncio.create_task(load.closed_loop(16, duration=6, max_requests=500_000))
        await asyncio.sleep(1.5)
        pg_cluster.stop("immediate")
        await asyncio.sleep(1.5)
        # One worker dies (OOM killer, segfault) while rows are spooling: its file is left behind
        # unlocked, uvicorn starts a new worker, and whoever gets the lock first replays it.
        victim = sorted(pids)[0]
        os.kill(victim, signal.SIGKILL)
        killed_at = time.monotonic()
        await asyncio.sleep(1)
        files_during = len(spool_files(spool))
        pg_cluster.start()
        result = await running
    settle = await wait_settled([gw], timeout=60)
    await watcher.stop()
    # Every worker must report an empty spool directory and an empty queue.
    for _ in range(6):
        await _warm_every_worker(gw.url, gw.key, attempts=3)
    await wait_settled([gw], timeout=30)
    accounting = await account(gw, load.outcomes)
    ages = [round(killed_at - o.ended, 3) for o in accounting.lost]
    record_result(workers=2, **accounting.as_dict(), statuses=result.statuses(), spool_files_during=files_during,
                  oldest_lost_age_s=max(ages, default=None), settle_s=settle, peak_rss_mb=watcher.peak_rss_mb())
    assert accounting.duplicated == accounting.foreign == accounting.mismatched == 0, accounting.as_dict()
    # Only the killed worker's last window may be missing.
    assert max(ages, default=0) <= 0.45, sorted(ages)[-10:]
    assert files_during >= 1
    assert not spool_files(spool)


async def test_two_gateways_on_different_ports_share_a_spool_directory(make_gateway, pg_cluster: PgCluster,
                                                                       tmp_path, record_result) -> None:
    spool = tmp_path / "shared-spool"
    a = await make_gateway("postgres", spool_dir=spool, writer_flush_interval="0.1")
    b = await make_gateway(database_url=a.database_url, spool_dir=spool, key=(a.key, a.key_id),
                           writer_flush_interval="0.1")
    async with Load([a.url, b.url], a.key) as load:
        await load.closed_loop(4, duration=5, max_requests=8)
        running = asyncio.create_task(load.closed_loop(16, duration=5, max_requests=500_000))
        await asyncio.sleep(1)
        pg_cluster.stop("immediate")
        await asyncio.sleep(1.5)
        # A stops cleanly during the outage: its queue goes to its spool file, which it leaves
        # behind.  B, still running, must replay A's file as well as its own once the database is
        # back, without A ever coming back.
        code, _ = await asyncio.to_thread(a.terminate)
        files_left = [p.name for p in spool_files(spool)]
        await asyncio.sleep(0.5)
        pg_cluster.start()
        result = await running
    settle = await wait_settled([b], timeout=60)
    accounting = await account(b, load.outcomes)
    _, ready = await b.readyz()
    # Load sends request n to urls[n % 2]: the even ones went to A.
    answered_by_a = sum(1 for o in load.outcomes if o.answered and int(o.seq.rsplit("-", 1)[1]) % 2 == 0)
    record_result(**accounting.as_dict(), statuses=result.statuses(), spool_files_after_a_stopped=len(files_left),
                  b_rows_replayed=ready["writer"]["rows_replayed"], settle_s=settle, answered_by_a=answered_by_a)
    assert code in (0, -15)
    assert len(files_left) >= 2, files_left
    assert not accounting.lost, [o.seq for o in accounting.lost[:10]]
    assert accounting.duplicated == accounting.foreign == accounting.mismatched == 0, accounting.as_dict()
    assert not spool_files(spool)


@pytest.mark.slow
@pytest.mark.timeout(300)
async def test_four_workers_sixty_seconds_with_outages(make_gateway, pg_cluster: PgCluster, record_result) -> None:
    gw = await make_gateway("postgres", server_workers="4", writer_flush_interval="0.1")
    await asyncio.sleep(1.5)
    pids = await _warm_every_worker(gw.url, gw.key, attempts=160, workers=4)
    watcher = Watcher([gw], interval=0.5).start()
    async with Load(gw.url, gw.key) as load:
        running = asyncio.create_task(load.closed_loop(32, duration=60, max_requests=1_000_000))
        for _ in range(3):  # three 8-second outages, 10 seconds apart
            await asyncio.sleep(10)
            pg_cluster.stop("immediate")
            await asyncio.sleep(8)
            pg_cluster.start()
        result = await running
    settle = await wait_settled([gw], timeout=120)
    await watcher.stop()
    accounting = await account(gw, load.outcomes)
    record_result(workers=4, workers_warmed=len(pids), **accounting.as_dict(), statuses=result.statuses(),
                  rate_per_s=result.rate(), latency_ms=result.latency_ms(), settle_s=settle,
                  peak_rss_mb=watcher.peak_rss_mb(), peak_spool_bytes=watcher.max_writer("spool_bytes"))
    assert not accounting.lost, [o.seq for o in accounting.lost[:10]]
    assert accounting.duplicated == accounting.foreign == accounting.mismatched == 0, accounting.as_dict()
