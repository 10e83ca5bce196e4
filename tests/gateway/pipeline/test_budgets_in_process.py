"""Budgets and rate limits on the request path, in-process (the Gateway app called directly, rows
in SQLite): refusals in each provider's shape and as rows, sequential and concurrent admission,
a period roll-over, soft budgets, translation routes and streams."""

from __future__ import annotations

import asyncio
import sqlite3
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest
import uuid_utils
from majordomo_gateway.app import Gateway
from majordomo_gateway.auth.keys import display_prefix, generate_key, hash_secret
from majordomo_gateway.budgets.scope import parse_scope
from majordomo_gateway.config import load_settings
from majordomo_gateway.periods import period_start
from majordomo_gateway.storage.records import BudgetRecord, RateLimitRecord

CHAT = b'{"model":"gpt-4o-mini","max_tokens":5,"messages":[{"role":"user","content":"hi"}]}'
ANSWER = (b'{"id":"chatcmpl-1","object":"chat.completion","model":"gpt-4o-mini",'
          b'"choices":[{"index":0,"message":{"role":"assistant","content":"Hello"},"finish_reason":"stop"}],'
          b'"usage":{"prompt_tokens":10,"completion_tokens":5,"total_tokens":15}}')
# gpt-4o-mini: $0.15 / $0.60 per million input / output tokens
COST = Decimal("0.0000045")


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
async def gateway(tmp_path: Path, memory_upstream: Any) -> Any:
    settings = load_settings(None, environ={}, database_url=f"sqlite:///{tmp_path / 'm.db'}",
                             **{"writer.spool_dir": str(tmp_path / "spool"), "writer.flush_interval": 0.01,
                                "budgets.refresh_interval": 0.02})
    clock = Clock(datetime.now(UTC).replace(hour=23, minute=59, second=50, microsecond=0))
    app = Gateway(settings, upstream=memory_upstream, clock=clock)
    await app.startup()
    key = generate_key()
    record = await app.database.create_key(str(uuid_utils.uuid7()), "budget-tests", None, hash_secret(key),
                                           display_prefix(key), clock.now)
    app.test_key, app.test_key_id, app.test_clock, app.test_db = key, record.id, clock, tmp_path / "m.db"
    try:
        yield app
    finally:
        await app.shutdown()


async def add_budget(app: Any, scope: str, limit: str, *, period: str = "day", soft: bool = False) -> BudgetRecord:
    parsed = parse_scope(scope)
    now = app.test_clock.now
    record = BudgetRecord(str(uuid_utils.uuid7()), parsed.text, parsed.kind, parsed.key, parsed.value,
                          Decimal(limit), period, "UTC", soft, (), None, now, now)
    created = await app.database.budgets.create(record, current_start=period_start(now, period, "UTC"))
    await app.budgets.refresh()
    return created  # type: ignore[no-any-return]


async def post(app: Any, call: Any, path: str, body: bytes, *extra: tuple[bytes, bytes]) -> Any:
    headers = [(b"content-type", b"application/json"), (b"authorization", b"Bearer sk-test"),
               (b"x-api-key", b"sk-ant-test"), (b"x-goog-api-key", b"g-test"),
               (b"x-majordomo-key", app.test_key.encode()), *extra]
    return await call(app, "POST", path, headers, body)


def rows(app: Any) -> list[dict[str, Any]]:
    with sqlite3.connect(app.test_db) as db:
        db.row_factory = sqlite3.Row
        return [dict(r) for r in db.execute("SELECT * FROM llm_requests ORDER BY id")]


def ledger(app: Any) -> dict[tuple[str, str, str], float]:
    with sqlite3.connect(app.test_db) as db:
        return {(b, v, p): s for b, v, p, s in db.execute(
            "SELECT budget_id, scope_value, period_start, spent FROM budget_spend")}


async def settled(app: Any, count: int) -> list[dict[str, Any]]:
    for _ in range(250):
        found = rows(app)
        if len(found) >= count:
            return found
        await asyncio.sleep(0.02)
    raise AssertionError(f"{len(rows(app))} rows, expected {count}")


async def test_sequential_requests_stop_exactly_where_the_budget_runs_out(gateway: Any, call: Any,
                                                                         memory_upstream: Any, canned: Any) -> None:
    budget = await add_budget(gateway, f"key:{gateway.test_key_id}", str(3 * COST))
    memory_upstream.answers.extend(canned.json(ANSWER) for _ in range(5))
    statuses = [(await post(gateway, call, "/v1/chat/completions", CHAT)).status for _ in range(5)]
    assert statuses == [200, 200, 200, 429, 429]  # $0.0000135 = 3 requests, not one more
    assert len(memory_upstream.requests) == 3  # the refused ones reached no provider
    refused = await post(gateway, call, "/v1/chat/completions", CHAT)
    error = orjson.loads(refused.body)["error"]
    assert error["type"] == "budget_exceeded" and error["code"] == "budget_exceeded"
    assert error["scope"] == f"key:{gateway.test_key_id}" and error["limit_usd"] == float(3 * COST)
    assert error["spent_usd"] == pytest.approx(float(3 * COST))
    resets = (gateway.test_clock.now.replace(hour=0, minute=0, second=0) + timedelta(days=1)).isoformat()
    assert error["resets_at"] == resets and resets in error["message"]
    assert "$0.0000135 of its $0.0000135 daily limit" in error["message"]
    assert refused.headers[b"x-should-retry"] == b"false"
    found = await settled(gateway, 6)
    refusals = [r for r in found if r["status_code"] == 429]
    assert len(refusals) == 3
    assert all(r["total_cost"] is None and r["error_message"].startswith("budget exceeded:") for r in refusals)
    assert refusals[0]["request_path"] == "/v1/chat/completions"
    # Counted once, from the rows: the ledger is the sum of the rows' cost.
    assert sum(ledger(gateway).values()) == pytest.approx(float(3 * COST))
    assert sum(float(r["total_cost"] or 0) for r in found) == pytest.approx(float(3 * COST))

    # The period rolls over at midnight UTC: a new day, a new budget.
    gateway.test_clock.now += timedelta(seconds=15)
    memory_upstream.answers.append(canned.json(ANSWER))
    assert (await post(gateway, call, "/v1/chat/completions", CHAT)).status == 200
    await settled(gateway, 7)
    tomorrow = period_start(gateway.test_clock.now, "day", "UTC").isoformat()
    assert ledger(gateway)[(budget.id, "", tomorrow)] == pytest.approx(float(COST))


def hold_upstream(memory_upstream: Any) -> asyncio.Event:
    """Make the upstream answer only once the returned event is set: requests stay in flight."""
    release = asyncio.Event()
    answer = memory_upstream.request

    async def held(*args: Any) -> Any:
        await release.wait()
        return await answer(*args)

    memory_upstream.request = held
    return release


async def in_flight(requests: list[Any], release: asyncio.Event) -> list[Any]:
    tasks = [asyncio.ensure_future(r) for r in requests]
    await asyncio.sleep(0.2)  # all admitted (or refused) while none has an answer
    release.set()
    return await asyncio.gather(*tasks)


async def test_concurrent_requests_hold_reservations(gateway: Any, call: Any, memory_upstream: Any,
                                                     canned: Any) -> None:
    await add_budget(gateway, "global", str(3 * COST))
    memory_upstream.answers.extend(canned.json(ANSWER) for _ in range(10))
    release = hold_upstream(memory_upstream)
    replies = await in_flight([post(gateway, call, "/v1/chat/completions", CHAT) for _ in range(10)], release)
    # Each holds its estimate (17 input tokens from the body's size, max_tokens 5 out: more than it
    # costs) until its cost is known, so the ten arriving together cannot all pass.
    assert sorted(r.status for r in replies) == [200] * 3 + [429] * 7
    assert gateway.budgets.counters and all(c.reserved == 0 for c in gateway.budgets.counters.values())


async def test_without_max_tokens_the_reservation_is_the_default_output(gateway: Any, call: Any,
                                                                       memory_upstream: Any, canned: Any) -> None:
    await add_budget(gateway, "global", "0.0001")
    memory_upstream.answers.extend(canned.json(ANSWER) for _ in range(3))
    body = b'{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}'
    release = hold_upstream(memory_upstream)
    replies = await in_flight([post(gateway, call, "/v1/chat/completions", body) for _ in range(3)], release)
    # 4096 output tokens reserved ($0.0025) exceed the $0.0001 left: one at a time
    assert sorted(r.status for r in replies) == [200, 429, 429]


async def test_refusals_in_each_providers_shape(gateway: Any, call: Any, memory_upstream: Any) -> None:
    await add_budget(gateway, "metadata:Feature=*", "0")
    feature = (b"x-majordomo-feature", b"summarize")
    anthropic = await post(gateway, call, "/v1/messages",
                           b'{"model":"claude-sonnet-4-5","max_tokens":5,"messages":[]}', feature)
    body = orjson.loads(anthropic.body)
    assert anthropic.status == 429 and body["type"] == "error"
    assert body["error"]["code"] == "budget_exceeded" and body["error"]["scope"] == "metadata:Feature=summarize"
    gemini = await post(gateway, call, "/v1beta/models/gemini-2.0-flash:generateContent", b'{"contents":[]}', feature)
    error = orjson.loads(gemini.body)["error"]
    assert gemini.status == 429 and error["status"] == "RESOURCE_EXHAUSTED" and error["code"] == 429
    assert error["details"][0]["reason"] == "budget_exceeded" and "metadata:Feature=summarize" in error["message"]
    translated = await post(gateway, call, "/v1/chat/completions",
                            b'{"model":"claude-sonnet-4-5","max_tokens":5,"messages":[{"role":"user","content":"x"}]}',
                            feature, (b"x-majordomo-provider", b"anthropic-openai"))
    assert translated.status == 429 and orjson.loads(translated.body)["error"]["type"] == "budget_exceeded"
    stream = await post(gateway, call, "/v1/chat/completions",
                        b'{"model":"gpt-4o-mini","stream":true,"messages":[]}', feature)
    assert stream.status == 429
    # Without the header, no budget covers the request.
    assert memory_upstream.requests == []
    found = await settled(gateway, 4)
    assert {r["route"] for r in found} == {"anthropic", "gemini", "anthropic-openai", "openai"}
    assert {r["status_code"] for r in found} == {429}


async def test_soft_budgets_never_refuse(gateway: Any, call: Any, memory_upstream: Any, canned: Any) -> None:
    await add_budget(gateway, "model:gpt-4o-mini", "0", soft=True)
    memory_upstream.answers.extend(canned.json(ANSWER) for _ in range(2))
    assert [(await post(gateway, call, "/v1/chat/completions", CHAT)).status for _ in range(2)] == [200, 200]
    found = await settled(gateway, 2)
    assert sum(ledger(gateway).values()) == pytest.approx(float(sum(Decimal(r["total_cost"]) for r in found)))


async def test_a_budget_changed_elsewhere_is_seen_at_the_next_refresh(gateway: Any, call: Any,
                                                                      memory_upstream: Any, canned: Any) -> None:
    budget = await add_budget(gateway, "global", "0")
    assert (await post(gateway, call, "/v1/chat/completions", CHAT)).status == 429
    await gateway.database.budgets.update(budget.id, limit_usd=Decimal(1), soft=False, alert_at=(), webhook=None,
                                          now=gateway.test_clock.now)
    await gateway.budgets.refresh()
    memory_upstream.answers.append(canned.json(ANSWER))
    assert (await post(gateway, call, "/v1/chat/completions", CHAT)).status == 200
    await gateway.database.budgets.delete(budget.id)
    await gateway.budgets.refresh()
    assert not gateway.budgets.active


async def test_rate_limits_refuse_with_retry_after(gateway: Any, call: Any, memory_upstream: Any,
                                                   canned: Any) -> None:
    now = gateway.test_clock.now
    scope = parse_scope("metadata:User-Id=*")
    await gateway.database.budgets.create_limit(RateLimitRecord(str(uuid_utils.uuid7()), scope.text, scope.kind,
                                                                scope.key, scope.value, 2, None, now, now))
    await gateway.budgets.refresh()
    memory_upstream.answers.extend(canned.json(ANSWER) for _ in range(3))
    user = (b"x-majordomo-user-id", b"u-1")
    statuses = [(await post(gateway, call, "/v1/chat/completions", CHAT, user)).status for _ in range(3)]
    assert statuses == [200, 200, 429]
    refused = await post(gateway, call, "/v1/chat/completions", CHAT, user)
    assert refused.headers[b"retry-after"] == b"10"  # the clock is at hh:mm:50
    error = orjson.loads(refused.body)["error"]
    assert error["code"] == "rate_limit_exceeded" and error["scope"] == "metadata:User-Id=u-1"
    other = await post(gateway, call, "/v1/chat/completions", CHAT, (b"x-majordomo-user-id", b"u-2"))
    assert other.status == 200  # one counter per user
    await gateway.budgets.refresh()  # shared through rate_usage: the counts survive the refresh
    assert (await post(gateway, call, "/v1/chat/completions", CHAT, user)).status == 429
    found = await settled(gateway, 6)
    assert [r["status_code"] for r in found].count(429) == 3
