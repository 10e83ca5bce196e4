"""A hard budget worth a handful of requests, hit by many at once through two `majordomo serve`
processes of two workers each on one PostgreSQL database: the served count stays within the bound
docs/budgets.md states, and the ledger is exactly the sum of the rows' costs (counted once)."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from pathlib import Path

import aiohttp
import orjson

from tests.support import GatewayProcess, PostgresServer
from tests.support.client import usage_header
from tests.support.upstream import MockUpstream

BODY = orjson.dumps({"model": "gpt-4o-mini", "max_tokens": 40, "messages": [{"role": "user", "content": "hi"}]})
USAGE = usage_header(input_tokens=10, output_tokens=40)
HANDFUL = 5
CONCURRENT = 40


async def _post(session: aiohttp.ClientSession, gw: GatewayProcess, delay_ms: int) -> int:
    headers = {"X-Majordomo-Key": gw.key, "Content-Type": "application/json", "Authorization": "Bearer sk-test",
               "X-Mock-Initial-Delay-Ms": str(delay_ms), **USAGE}
    async with session.post(gw.url + "/v1/chat/completions", data=BODY, headers=headers) as response:
        await response.read()
        return response.status


async def _settled(gw: GatewayProcess, count: int) -> None:
    for _ in range(300):
        if await gw.count_rows() >= count:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{await gw.count_rows()} rows, expected {count}")


async def test_many_concurrent_requests_over_four_processes(postgres: PostgresServer, mock_upstream: MockUpstream,
                                                            tmp_path: Path) -> None:
    url = postgres.create()
    env = {"MAJORDOMO_SERVER_WORKERS": "2"}
    first = GatewayProcess(url, mock_upstream.url, tmp_path / "a", extra_env=env).start()
    second = GatewayProcess(url, mock_upstream.url, tmp_path / "b", extra_env=env, key=first.key,
                            key_id=first.key_id).start()
    try:
        async with aiohttp.ClientSession() as session:
            assert await _post(session, first, 0) == 200  # what one request costs
            await _settled(first, 1)
            [(cost,)] = await first.query("SELECT total_cost FROM llm_requests")
            assert cost > 0
            limit = cost * (HANDFUL + 1)  # the first one is counted when the budget is created
            created = orjson.loads(first.cli("budgets", "create", "--scope", "global", "--limit-usd", str(limit),
                                             "--period", "day", "--json").stdout)
            assert Decimal(str(created["spent"])) == cost
            await asyncio.sleep(1.0)  # every worker has refreshed its view
            gateways = [first, second] * (CONCURRENT // 2)
            statuses = await asyncio.gather(*(_post(session, gw, 300) for gw in gateways))
            served = statuses.count(200)
            assert statuses.count(429) == CONCURRENT - served
            await _settled(first, CONCURRENT + 1)
            await asyncio.sleep(1.0)
            # Used up now, for every process.
            assert [await _post(session, gw, 0) for gw in (first, second, first, second)] == [429] * 4
        await _settled(first, CONCURRENT + 5)
        [(rows_cost, priced)] = await first.query(
            "SELECT sum(total_cost), count(total_cost) FROM llm_requests")
        [(ledger, counted)] = await first.query("SELECT spent, requests FROM budget_spend")
        assert ledger == rows_cost and counted == CONCURRENT + 5  # each row once, refusals included
        assert priced == served + 1
        print(f"served {served} of {CONCURRENT} against a budget of {HANDFUL} ({ledger / limit:.2f}x the limit)")
        assert HANDFUL <= served <= BOUND
    finally:
        first.stop()
        second.stop()


# docs/budgets.md: with P processes, the spend stays under limit x (1 + exact_share x (P - 1) / P)
# when estimates cover the costs (they do here: 40 output tokens reserved, 40 reported; the body's
# size over-estimates the 10 input tokens).  A request costs limit / (HANDFUL + 1).
PROCESSES = 4
EXACT_SHARE = 0.2
BOUND = HANDFUL + int(EXACT_SHARE * (HANDFUL + 1) * (PROCESSES - 1) / PROCESSES)
