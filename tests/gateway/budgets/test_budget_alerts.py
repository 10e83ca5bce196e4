"""Budget alerts delivered by real `majordomo serve` processes to a real HTTP server on loopback:
once per threshold per period however many processes see the crossing, retried with backoff when
the webhook fails, and visible in `budgets list` (docs/budgets.md, "Alerts")."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from aiohttp import web

from tests.support import GatewayProcess, PostgresServer, assert_no_secret, free_port
from tests.support.client import usage_header
from tests.support.upstream import MockUpstream

BODY = orjson.dumps({"model": "gpt-4o-mini", "max_tokens": 40, "messages": [{"role": "user", "content": "hi"}]})
SECRET = "T000-B000-hooksecret"


class Receiver:
    """A webhook that answers 500 to its first ``failures`` POSTs, then 200."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.posts: list[tuple[int, dict[str, Any]]] = []
        self.port = free_port()
        self.runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/services/{SECRET}"

    async def handle(self, request: web.Request) -> web.Response:
        assert request.path == f"/services/{SECRET}" and request.content_type == "application/json"
        status = 500 if len(self.posts) < self.failures else 200
        self.posts.append((status, orjson.loads(await request.read())))
        return web.Response(status=status, text="ok" if status == 200 else "try later")

    async def __aenter__(self) -> Receiver:
        app = web.Application()
        app.router.add_post("/services/{secret}", self.handle)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.runner is not None
        await self.runner.cleanup()

    def delivered(self) -> list[dict[str, Any]]:
        return [payload for status, payload in self.posts if status == 200]


async def _post(session: aiohttp.ClientSession, gw: GatewayProcess) -> int:
    headers = {"X-Majordomo-Key": gw.key, "Content-Type": "application/json", "Authorization": "Bearer sk-test",
               **usage_header(input_tokens=10, output_tokens=40)}
    async with session.post(gw.url + "/v1/chat/completions", data=BODY, headers=headers) as response:
        await response.read()
        return response.status


async def _until(check: Any, what: str, seconds: float = 20.0) -> None:
    for _ in range(int(seconds / 0.05)):
        if await check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


async def test_alerts_are_sent_once_per_threshold_by_one_of_two_processes_and_retried(
        postgres: PostgresServer, mock_upstream: MockUpstream, tmp_path: Path) -> None:
    url = postgres.create()
    env = {"MAJORDOMO_SERVER_WORKERS": "2", "MAJORDOMO_BUDGETS_ALERT_INTERVAL": "0.1",
           "MAJORDOMO_BUDGETS_ALERT_BACKOFF": "0.3"}
    first = GatewayProcess(url, mock_upstream.url, tmp_path / "a", extra_env=env).start()
    second = GatewayProcess(url, mock_upstream.url, tmp_path / "b", extra_env=env, key=first.key,
                            key_id=first.key_id).start()
    try:
        async with Receiver(failures=2) as hook, aiohttp.ClientSession() as session:
            assert await _post(session, first) == 200
            await _until(lambda: _rows(first, 1), "the first row")
            [(cost,)] = await first.query("SELECT total_cost FROM llm_requests")
            created = orjson.loads(first.cli(
                "budgets", "create", "--scope", "global", "--limit-usd", str(cost * 3), "--period", "day",
                "--soft", "--alert-at", "50,100,200", "--webhook", hook.url, "--json").stdout)
            await asyncio.sleep(1.0)
            assert hook.posts == []  # 33%: nothing crossed
            assert await _post(session, second) == 200  # 67%: the 50% threshold
            await _until(lambda: _delivered(hook, 1), "the 50% alert")
            assert await _post(session, first) == 200  # 100%
            await _until(lambda: _delivered(hook, 2), "the 100% alert")
            await asyncio.sleep(2.0)  # four deliverers had every chance to send again
        assert [p["threshold"] for p in hook.delivered()] == [50, 100]
        assert [s for s, _ in hook.posts] == [500, 500, 200, 200]  # failed twice, then sent once each
        first_alert, second_alert = hook.delivered()
        assert first_alert["scope"] == "global" and first_alert["budget_id"] == created["id"]
        assert first_alert["limit"] == float(cost * 3) and first_alert["period"] == "day"
        assert first_alert["spend"] == float(cost * 2) and second_alert["spend"] == float(cost * 3)
        assert first_alert["resets_at"] == created["resets_at"] and first_alert["soft"] is True
        assert first_alert["text"].startswith("Majordomo budget alert: global has spent $")
        assert "(67%, threshold 50%)" in first_alert["text"] and "daily soft limit" in first_alert["text"]
        [(attempts, errors)] = await first.query(
            "SELECT sum(attempts), count(last_error) FROM budget_alerts WHERE sent_at IS NOT NULL")
        assert (attempts, errors) == (4, 0)
        listed = orjson.loads(first.cli("budgets", "list", "--json").stdout)
        assert listed[0]["alerted"] == [50, 100]
        assert "ALERTED" in first.cli("budgets", "list").stdout and "50%,100%" in first.cli("budgets", "list").stdout
        for gw in (first, second):
            log = gw.log_path.read_text()
            assert SECRET not in log
            assert_no_secret([log], [gw.key])
        assert "not delivered to http://127.0.0.1" in first.log_path.read_text() + second.log_path.read_text()
    finally:
        first.stop()
        second.stop()


async def _rows(gw: GatewayProcess, count: int) -> bool:
    return await gw.count_rows() >= count


async def _delivered(hook: Receiver, count: int) -> bool:
    return len(hook.delivered()) >= count
