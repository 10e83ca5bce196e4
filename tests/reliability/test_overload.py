"""Scenario 3: offered load at twice the gateway's measured saturation, for 60 seconds.

First the saturation point: closed-loop clients at rising concurrency until throughput stops
growing.  Then an open loop (arrivals do not slow down when the gateway does) at twice that rate,
with at most ``MAX_IN_FLIGHT`` requests pending on the client side.  The gateway must not crash,
its latency must grow without collapsing its throughput, memory must stay bounded, and every
request a client saw answered (a 503 from admission control included) must have its row.
bench/overload.py measures admission control itself (docs/reliability.md).

Everything runs on one machine: load generator, mock upstream, gateway and PostgreSQL share its
CPUs, so "saturation" is the saturation of that whole system, which is what the numbers report.
"""

from __future__ import annotations

import asyncio
import os
import time

import pytest

from tests.support.reliability import Load, MockProcess, Outcome, Watcher, account, wait_settled

MAX_IN_FLIGHT = 2000


async def _forget_periodically(mock: MockProcess, every: float, until: float) -> None:
    while time.monotonic() < until:
        await asyncio.sleep(every)
        await mock.forget()


def _windows(outcomes: list[Outcome], start: float, width: float) -> list[dict[str, float]]:
    """Per time window (by start time): goodput and latency percentiles of completed requests."""
    rows = []
    end = max((o.ended for o in outcomes if o.ended), default=start)
    t = start
    while t < end:
        chunk = sorted((o.ended - o.started) * 1000 for o in outcomes
                       if t <= o.started < t + width and o.status == 200 and o.complete)
        if chunk:
            rows.append({"t_s": round(t - start), "ok_per_s": round(len(chunk) / width, 1),
                         "p50_ms": round(chunk[len(chunk) // 2], 1),
                         "p99_ms": round(chunk[min(len(chunk) - 1, int(len(chunk) * 0.99))], 1)})
        t += width
    return rows


@pytest.mark.slow
@pytest.mark.timeout(600)
async def test_twice_saturation_for_sixty_seconds(make_gateway, mock_process: MockProcess, record_result) -> None:
    gw = await make_gateway("postgres", writer_flush_interval="0.1")
    steps = []
    async with Load(gw.url, gw.key, timeout=30, run="sat") as probe:
        await probe.closed_loop(4, duration=5, max_requests=200)
        for concurrency in (8, 32, 64, 128):
            result = await probe.closed_loop(concurrency, duration=6, max_requests=1_000_000)
            steps.append({"concurrency": concurrency, "ok_per_s": result.rate(), "latency_ms": result.latency_ms()})
            await mock_process.forget()
    saturation = max(s["ok_per_s"] for s in steps)
    offered = round(2 * saturation)
    await wait_settled([gw], timeout=60)

    duration = float(os.environ.get("MAJORDOMO_RELIABILITY_OVERLOAD_SECONDS", "60"))
    watcher = Watcher([gw], interval=1.0).start()
    forgetting = asyncio.create_task(_forget_periodically(mock_process, 5, time.monotonic() + duration + 40))
    started = time.monotonic()
    async with Load(gw.url, gw.key, timeout=30, run="over") as load:
        result = await load.open_loop(offered, duration=duration, max_in_flight=MAX_IN_FLIGHT)
    alive = gw.process is not None and gw.process.poll() is None
    settle = await wait_settled([gw], timeout=120)
    await watcher.stop()
    forgetting.cancel()
    accounting = await account(gw, probe.outcomes + load.outcomes)
    _, ready = await gw.readyz()
    windows = _windows(result.outcomes, started, 10)
    record_result(
        saturation_steps=steps, saturation_per_s=saturation, offered_per_s=offered, duration_s=duration,
        achieved_offered_per_s=round(len(result.outcomes) / duration, 1), not_sent_client_cap=result.not_sent,
        goodput_per_s=result.rate(), latency_ms=result.latency_ms(), statuses=result.statuses(),
        windows=windows, **accounting.as_dict(), peak_rss_mb=watcher.peak_rss_mb(),
        peak_queue_depth=watcher.max_writer("queue_depth"), peak_spool_bytes=watcher.max_writer("spool_bytes"),
        rows_spooled=ready["writer"]["rows_spooled"], rows_dropped=ready["writer"]["rows_dropped"],
        settle_s=settle, gateway_alive=alive,
    )
    assert alive, gw.log_text()[-3000:]
    assert not accounting.lost, [o.seq for o in accounting.lost[:10]]
    assert accounting.duplicated == accounting.foreign == accounting.mismatched == 0, accounting.as_dict()
    assert ready["writer"]["rows_dropped"] == 0
    # Graceful: beyond proxy.max_in_flight requests are refused with a 503 (each with its row,
    # counted above), never another error; throughput sags but never collapses.
    assert {o.status for o in result.outcomes} <= {200, 503}, result.statuses()
    assert result.rate() >= 0.4 * saturation, (result.rate(), saturation)
    assert all(w["ok_per_s"] >= 0.25 * saturation for w in windows[:-1]), windows
    assert watcher.peak_rss_mb() < 1024
