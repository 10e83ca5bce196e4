"""A budget's spend lives in the database: a restarted `majordomo serve` refuses where the one
before it stopped (nothing held in memory is needed)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
import orjson
import pytest

from tests.support import GatewayProcess
from tests.support.client import usage_header
from tests.support.upstream import MockUpstream

# The estimate (body bytes / 4 input tokens, 30 output) stays under the real cost (10 in, 40 out), so
# the exact reservations near the limit admit up to it (docs/budgets.md).
BODY = orjson.dumps({"model": "gpt-4o-mini", "max_tokens": 30, "messages": [{"role": "user", "content": "hi"}]})


async def _post(session: aiohttp.ClientSession, gw: GatewayProcess) -> int:
    headers = {"X-Majordomo-Key": gw.key, "Content-Type": "application/json", "Authorization": "Bearer sk-test",
               **usage_header(input_tokens=10, output_tokens=40)}
    async with session.post(gw.url + "/v1/chat/completions", data=BODY, headers=headers) as response:
        await response.read()
        return response.status


async def _rows(gw: GatewayProcess, count: int) -> None:
    for _ in range(200):
        if await gw.count_rows() >= count:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"fewer than {count} rows")


async def test_spend_survives_a_restart(mock_upstream: MockUpstream, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'restart.db'}"
    gw = GatewayProcess(url, mock_upstream.url, tmp_path / "gw").start()
    try:
        async with aiohttp.ClientSession() as session:
            assert await _post(session, gw) == 200
            await _rows(gw, 1)
            [(cost,)] = await gw.query("SELECT total_cost FROM llm_requests")
            limit = f"{float(cost) * 3:.10f}"
            gw.cli("budgets", "create", "--scope", "global", "--limit-usd", limit, "--period", "day")
            await asyncio.sleep(1.0)
            assert [await _post(session, gw) for _ in range(2)] == [200, 200]
            await _rows(gw, 3)
            gw.stop()
            gw.start()
        async with aiohttp.ClientSession() as session:  # not the old process's keep-alive connection
            assert [await _post(session, gw) for _ in range(2)] == [429, 429]
            await _rows(gw, 5)
        [(spent, requests)] = await gw.query("SELECT spent, requests FROM budget_spend")
        assert float(spent) == pytest.approx(float(cost) * 3) and requests == 5  # each row once, across the restart
    finally:
        gw.stop()
