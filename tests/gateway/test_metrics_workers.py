"""/metrics over real ``majordomo serve`` processes: every worker's requests counted once,
whichever worker is scraped, on the gateway's port or on metrics.port."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import aiohttp
import pytest

from tests.support import GatewayProcess, free_port
from tests.support.metrics import Scrape, scrape

CHAT = {"model": "gpt-4o", "messages": [{"role": "user", "content": "Hello!"}]}
TOKEN = "metrics-token-0123456789abcdef"


async def _send(gw: GatewayProcess, count: int) -> set[str]:
    """``count`` requests on fresh connections (so both workers get some); the worker pids seen."""
    pids: set[str] = set()
    headers = {"X-Majordomo-Key": gw.key, "Authorization": "Bearer sk-test", "Connection": "close"}
    async with aiohttp.ClientSession() as session:
        for _ in range(count):
            async with session.post(gw.url + "/v1/chat/completions", json=CHAT, headers=headers) as response:
                assert response.status == 200
                await response.read()
            async with session.get(gw.url + "/readyz", headers={"Connection": "close"}) as response:
                pids.add(str((await response.json())["writer"]["pid"]))
    return pids


async def _until(url: str, want: float, token: str | None = None, timeout: float = 10.0) -> Scrape:
    deadline = time.monotonic() + timeout
    while True:
        got = await scrape(url, token)
        total = got.value("majordomo_requests_total", status="200")
        assert total <= want, f"counted {total} of {want} requests: some twice"
        if total == want and got.value("majordomo_workers") == 2:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"/metrics says {total} requests, {got.value('majordomo_workers')} workers; "
                                 f"{want} sent to 2")
        await asyncio.sleep(0.2)


@pytest.fixture
async def two_workers(mock_upstream: object, tmp_path: Path, request: pytest.FixtureRequest) -> GatewayProcess:
    extra = {"MAJORDOMO_SERVER_WORKERS": "2", **getattr(request, "param", {})}
    gw = GatewayProcess(database_url=f"sqlite:///{tmp_path / 'majordomo.db'}",
                        upstream_url=mock_upstream.url, workdir=tmp_path, extra_env=extra)  # type: ignore[attr-defined]
    gw.start()
    yield gw  # type: ignore[misc]
    gw.stop()


async def test_two_workers_are_counted_exactly_once_on_every_scrape(two_workers: GatewayProcess) -> None:
    gw = two_workers
    pids = await _send(gw, 40)
    assert len(pids) == 2, pids  # both workers served requests
    await _until(gw.url + "/metrics", 40)
    # Whichever worker answers the scrape, the sum stays the same.
    for _ in range(8):
        got = await scrape(gw.url + "/metrics")
        assert got.value("majordomo_requests_total", status="200") == 40
        assert got.value("majordomo_request_duration_seconds_count") == 40
        assert got.value("majordomo_tokens_total", type="input") > 0
    rows = await gw.count_rows()
    assert rows == 40
    assert got.value("majordomo_writer_rows_written_total") <= 40


METRICS_PORT = free_port()


@pytest.mark.parametrize("two_workers", [{"MAJORDOMO_METRICS_PORT": str(METRICS_PORT),
                                          "MAJORDOMO_METRICS_TOKEN": TOKEN}], indirect=True)
async def test_metrics_port_with_a_token_serves_every_worker(two_workers: GatewayProcess) -> None:
    gw = two_workers
    url = f"http://127.0.0.1:{METRICS_PORT}/metrics"
    await _send(gw, 20)
    got = await _until(url, 20, token=TOKEN)
    assert got.value("majordomo_writer_database_up") == 1
    async with aiohttp.ClientSession() as session:
        async with session.get(url) as response:
            assert response.status == 401
            assert TOKEN not in await response.text()
        async with session.get(url, headers={"Authorization": "Bearer nope"}) as response:
            assert response.status == 401
        # The gateway's own port says where the metrics are.
        async with session.get(gw.url + "/metrics") as response:
            assert response.status == 404 and str(METRICS_PORT) in await response.text()
    assert TOKEN not in gw.log_text()
