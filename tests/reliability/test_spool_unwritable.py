"""Scenario 6: the spool cannot be written (disk full, or not a directory at all).

``writer.on_spool_failure`` (docs/reliability.md) chooses.  ``refuse``, the default: while the
database is down too, requests get a 503 rather than be served unrecorded (the last test).
``accept``: the gateway keeps serving (the first two).  It says so loudly —
a CRITICAL log line, ``/readyz`` status ``degraded`` with a warning, ``spool_ok: false`` and
``spool_errors`` — and holds rows in memory up to ``writer.queue_size``; rows beyond that bound
are dropped and counted (``rows_dropped``).  A stop in that state exits in bounded time.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
from collections.abc import Iterator
from pathlib import Path

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
    full_filesystem,
    log_lines,
    spool_files,
    wait_settled,
)


@contextlib.contextmanager
def tiny_tmpfs(path: Path, size: str = "64k") -> Iterator[Path]:
    path.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(path)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


async def test_spool_not_a_directory_reported_then_rows_held_in_memory_then_bounded_stop(
        make_gateway, pg_cluster: PgCluster, tmp_path: Path, record_result) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a regular file where the spool directory should be\n")
    gw = await make_gateway("postgres", spool_dir=blocker / "spool", writer_queue_size="50000",
                            writer_on_spool_failure="accept")
    # Reported at start, before any row needs the spool.
    status, ready = await gw.readyz()
    assert status == 200 and ready["status"] == "degraded", ready
    assert ready["writer"]["spool_ok"] is False and any("spool" in w for w in ready["warnings"]), ready
    assert log_lines(gw, "CRITICAL"), gw.log_text()[-2000:]

    # Database down too: requests are still served, rows wait in memory, all arrive afterwards.
    watcher = Watcher([gw]).start()
    async with Load(gw.url, gw.key) as load:
        await load.closed_loop(4, duration=5, max_requests=8)
        pg_cluster.stop("immediate")
        result = await load.closed_loop(8, duration=2, max_requests=3000)
        during_status, during = await gw.readyz()
        pg_cluster.start()
    settle = await wait_settled([gw], timeout=30)
    await watcher.stop()
    accounting = await account(gw, load.outcomes)
    _, after = await gw.readyz()
    errors = log_lines(gw, "cannot write the spool")
    assert {o.status for o in result.outcomes} == {200}, result.statuses()
    assert during_status == 503 and during["writer"]["spool_ok"] is False, during
    assert during["writer"]["queue_depth"] > 0
    assert not accounting.lost and accounting.duplicated == 0, accounting.as_dict()
    # Loud, not noisy: one CRITICAL line when it starts, then the periodic status line.
    assert 1 <= len(errors) <= 5, errors

    # And a stop in that state exits (it used to spin forever), saying how many rows it lost.
    async with Load(gw.url, gw.key, run="stop") as load:
        pg_cluster.stop("immediate")
        await load.closed_loop(4, duration=1, max_requests=200)
    code, exit_s = await asyncio.to_thread(gw.terminate, 40)
    pg_cluster.start()
    lost = log_lines(gw, "rows lost")
    record_result(readyz_at_start=ready["status"], **accounting.as_dict(), statuses=result.statuses(),
                  readyz_during=during_status, peak_queue_depth=watcher.max_writer("queue_depth"),
                  peak_rss_mb=watcher.peak_rss_mb(), spool_errors=after["writer"]["spool_errors"],
                  spool_error_log_lines=len(errors), settle_s=settle, exit_code=code, exit_s=exit_s,
                  lost_at_exit_log=lost[-1].split("CRITICAL ")[-1][:60] if lost else None)
    assert code in (0, -15), f"exit {code} after {exit_s}s:\n{gw.log_text()[-2000:]}"
    assert exit_s < 20
    assert lost, gw.log_text()[-2000:]


async def test_spool_on_a_full_tmpfs(make_gateway, pg_cluster: PgCluster, tmp_path: Path, record_result) -> None:
    with tiny_tmpfs(tmp_path / "tiny") as tiny:
        gw = await make_gateway("postgres", spool_dir=tiny / "spool", writer_queue_size="2000",
                                writer_on_spool_failure="accept")
        async with Load(gw.url, gw.key) as load:
            await load.closed_loop(4, duration=5, max_requests=8)
            pg_cluster.stop("immediate")
            result = await load.closed_loop(8, duration=2.5, max_requests=4000)
            _, during = await gw.readyz()
            files = spool_files(tiny / "spool")
            on_disk = sum(p.stat().st_size for p in files)
            pg_cluster.start()
        await wait_settled([gw], timeout=60)
        accounting = await account(gw, load.outcomes)
        _, after = await gw.readyz()
        dropped = after["writer"]["rows_dropped"]
        record_result(**accounting.as_dict(), statuses=result.statuses(), spool_bytes_when_full=on_disk,
                      queue_size=2000, rows_dropped=dropped, spool_errors=after["writer"]["spool_errors"],
                      readyz_during=during["status"], warnings_during=during.get("warnings"))
        assert {o.status for o in result.outcomes} == {200}, result.statuses()
        assert during["writer"]["spool_ok"] is False, during
        assert after["writer"]["spool_errors"] > 0
        # What the tmpfs held came back, and what memory held; only the excess over queue_size
        # was dropped, and every drop is counted.
        assert len(accounting.lost) == dropped, (accounting.as_dict(), dropped)
        assert accounting.duplicated == accounting.foreign == 0, accounting.as_dict()
        gw.kill()


async def test_full_spool_and_database_down_refuses_with_503_then_serves_again(
        make_gateway, pg_cluster: PgCluster, tmp_path: Path, record_result) -> None:
    """writer.on_spool_failure: refuse (the default): while no row could be recorded, requests get
    a 503 in the provider's shape with Retry-After, instead of being served unrecorded."""
    with full_filesystem(tmp_path / "full") as spool:
        gw = await make_gateway("postgres", spool_dir=spool)
        _, ready = await gw.readyz()
        assert ready["writer"]["spool_ok"] is False, ready  # found at start, before rows need it
        async with Load(gw.url, gw.key, run="refuse") as load:
            before = await load.closed_loop(4, duration=2, max_requests=8)
            pg_cluster.stop("immediate")
            during = await load.closed_loop(4, duration=3, max_requests=3000)
            async with aiohttp.ClientSession() as session, session.post(
                    gw.url + "/v1/chat/completions", json=CHAT,
                    headers={"X-Majordomo-Key": gw.key, "Authorization": f"Bearer {OPENAI_KEY}",
                             SEQ_HEADER: f"{WARM}refused"}) as response:
                refused = (response.status, response.headers.get("Retry-After"), await response.json())
            ready_status, ready_during = await gw.readyz()
            pg_cluster.start()
            await wait_settled([gw], timeout=30)
            after = await load.closed_loop(4, duration=2, max_requests=len(load.outcomes) + 200)
        await wait_settled([gw], timeout=30)  # the last answers' rows are still in the writer's queue
        accounting = await account(gw, load.outcomes)
        statuses = during.statuses()
        # The answers served after the database went down and before the writer noticed (its next
        # batch) are the only 200s; from then on, every request is refused.
        tail = during.outcomes[len(during.outcomes) // 4:]
        record_result(statuses_during=statuses, first_refusal_s=round(min(
            (o.started for o in during.outcomes if o.status == 503), default=0) - during.outcomes[0].started, 3),
            **accounting.as_dict(), refusing_log=len(log_lines(gw, "refusing requests")))
        assert {o.status for o in before.outcomes} == {200}
        assert {o.status for o in tail} == {503}, statuses
        assert refused[0] == 503 and refused[1] == "5", refused
        assert refused[2]["error"]["code"] == "not_recorded", refused  # OpenAI's error shape
        assert ready_status == 503 and ready_during["writer"]["refusing_requests"] is True, ready_during
        assert any("refusing requests" in w for w in ready_during["warnings"]), ready_during
        assert log_lines(gw, "CRITICAL", "refusing requests (503)")
        assert {o.status for o in after.outcomes} == {200}, after.statuses()
        # Every answer, 503s included, has its row: held in memory while nothing would take them.
        assert not accounting.lost and accounting.duplicated == accounting.foreign == 0, accounting.as_dict()
        gw.kill()
