"""/metrics in-process: what each request adds to the counters and histograms, read back through
prometheus-client's text parser."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import orjson
import pytest
from majordomo_gateway.proxy.upstream import UpstreamConnectError, UpstreamTimeout

from tests.support.metrics import Scrape, parse

CHAT = b'{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}'
STREAM = b'{"model":"gpt-4o-mini","stream":true,"stream_options":{"include_usage":true},"messages":[]}'
MODEL = "gpt-4o-mini-2024-07-18"
ANSWER = orjson.dumps({
    "id": "chatcmpl-1", "object": "chat.completion", "model": MODEL,
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello"}, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 100, "completion_tokens": 40, "total_tokens": 140,
              "prompt_tokens_details": {"cached_tokens": 30},
              "completion_tokens_details": {"reasoning_tokens": 12}},
})


def _chunk(**fields: Any) -> bytes:
    base = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "model": MODEL}
    return b"data: " + orjson.dumps(base | fields) + b"\n\n"


STREAM_EVENTS = [
    _chunk(choices=[{"index": 0, "delta": {"role": "assistant", "content": "Hel"}, "finish_reason": None}]),
    _chunk(choices=[{"index": 0, "delta": {"content": "lo"}, "finish_reason": "stop"}]),
    _chunk(choices=[], usage={"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}),
    b"data: [DONE]\n\n",
]


async def _scrape(in_process: Any, call: Any, token: str | None = None) -> Scrape:
    headers = [(b"authorization", f"Bearer {token}".encode())] if token else []
    reply = await call(in_process.gateway, "GET", "/metrics", headers)
    assert reply.status == 200, reply.body
    assert reply.headers[b"content-type"].startswith(b"text/plain; version=0.0.4")
    return parse(reply.body.decode())


async def test_requests_tokens_cost_and_durations_are_counted(in_process: Any, canned: Any, call: Any) -> None:
    before = await _scrape(in_process, call)
    assert before.value("majordomo_requests_total") == 0
    in_process.upstream.answers += [canned.json(ANSWER), canned.sse(STREAM_EVENTS)]
    first = await in_process.post("/v1/chat/completions", CHAT)
    second = await in_process.post("/v1/chat/completions", STREAM)
    rows = [await in_process.row(r.headers[b"x-majordomo-request-id"]) for r in (first, second)]
    got = await _scrape(in_process, call)
    labels = {"provider": "openai", "model": MODEL}
    assert got.value("majordomo_requests_total", **labels, route="openai", status="200") == 2
    assert got.value("majordomo_tokens_total", **labels, type="input") == 110
    assert got.value("majordomo_tokens_total", **labels, type="output") == 45
    assert got.value("majordomo_tokens_total", **labels, type="cache_read") == 30
    assert got.value("majordomo_tokens_total", **labels, type="reasoning") == 12
    assert got.value("majordomo_tokens_total", type="cache_write") == 0
    cost = sum(Decimal(str(row["total_cost"])) for row in rows)
    assert cost > 0 and got.value("majordomo_cost_usd_total", **labels) == pytest.approx(float(cost), rel=1e-9)
    assert got.value("majordomo_request_duration_seconds_count", **labels) == 2
    duration = got.value("majordomo_request_duration_seconds_sum", **labels)
    assert duration == pytest.approx(sum(row["response_time_ms"] for row in rows) / 1000, rel=1e-6)
    # Only the stream has a first chunk.
    assert got.value("majordomo_time_to_first_token_seconds_count", **labels) == 1
    assert got.value("majordomo_gateway_overhead_seconds_count", provider="openai") == 2
    overhead = got.value("majordomo_gateway_overhead_seconds_sum", provider="openai")
    assert 0 < overhead <= duration
    # Cumulative buckets: +Inf holds every observation.
    assert got.value("majordomo_request_duration_seconds_bucket", **labels, le="+Inf") == 2
    assert got.types["majordomo_requests"] == "counter"
    assert got.types["majordomo_request_duration_seconds"] == "histogram"


async def test_upstream_errors_by_kind(in_process: Any, canned: Any, call: Any) -> None:
    in_process.upstream.answers += [UpstreamConnectError("refused"), UpstreamTimeout("slow"),
                                    canned.json(b'{"error":{"message":"overloaded"}}', status=503),
                                    canned.json(b'{"error":{"message":"slow down"}}', status=429),
                                    canned(200, [(b"Content-Type", b"text/event-stream")], STREAM_EVENTS[:1],
                                           broken=True)]
    statuses = [(await in_process.post("/v1/chat/completions", body)).status
                for body in (CHAT, CHAT, CHAT, CHAT, STREAM)]
    assert statuses == [502, 504, 503, 429, 200]
    got = await _scrape(in_process, call)
    for kind in ("unreachable", "timeout", "http_5xx", "http_429", "broken"):
        assert got.value("majordomo_upstream_errors_total", provider="openai", route="openai", kind=kind) == 1, kind
    assert got.value("majordomo_requests_total", status="502") == 1
    assert got.value("majordomo_requests_total", status="504") == 1


async def test_answers_without_a_row_are_counted_by_status(in_process: Any, call: Any) -> None:
    await in_process.post("/v1/chat/completions", CHAT, key=False)
    await in_process.post("/v1/chat/completions", CHAT, (b"x-majordomo-key", b"mdm_sk_nope"), key=False)
    got = await _scrape(in_process, call)
    assert got.value("majordomo_requests_total", status="401", route="openai") == 2


@pytest.mark.parametrize("in_process", [{"metrics.token": "s3cret-scrape-token"}], indirect=True)
async def test_a_configured_token_is_required(in_process: Any, call: Any) -> None:
    for headers in ([], [(b"authorization", b"Bearer wrong")], [(b"authorization", b"Basic s3cret-scrape-token")]):
        reply = await call(in_process.gateway, "GET", "/metrics", headers)
        assert reply.status == 401 and reply.headers[b"www-authenticate"].startswith(b"Bearer")
        assert b"s3cret" not in reply.body
    got = await _scrape(in_process, call, token="s3cret-scrape-token")
    assert "majordomo_requests" in got.types


@pytest.mark.parametrize("in_process", [{"metrics.labels": ["Feature", "user-id"], "metrics.max_label_values": 2}],
                         indirect=True)
async def test_metadata_labels_are_capped_with_other(in_process: Any, canned: Any, call: Any) -> None:
    for feature in ("search", "chat", "search", "summary", "translate"):
        in_process.upstream.answers.append(canned.json(ANSWER))
        reply = await in_process.post("/v1/chat/completions", CHAT, (b"x-majordomo-feature", feature.encode()),
                                      (b"x-majordomo-user-id", b"u1"))
        assert reply.status == 200
    in_process.upstream.answers.append(canned.json(ANSWER))
    await in_process.post("/v1/chat/completions", CHAT)  # no Feature header
    got = await _scrape(in_process, call)
    requests = {(s["feature"], s["user_id"]): v for n, s, v in got.samples if n == "majordomo_requests_total"}
    assert requests == {("search", "u1"): 2, ("chat", "u1"): 1, ("other", "u1"): 2, ("", ""): 1}
    assert got.value("majordomo_tokens_total", feature="other", type="input") == 200
    assert got.value("majordomo_cost_usd_total", feature="search") > 0
    # The histograms keep to provider and model: metadata would multiply their buckets.
    assert all("feature" not in s for s in got.series("majordomo_request_duration_seconds_bucket"))


@pytest.mark.parametrize("in_process", [{"metrics.enabled": False}], indirect=True)
async def test_disabled_metrics_count_nothing(in_process: Any, canned: Any, call: Any) -> None:
    assert in_process.gateway.proxy.metrics is None
    in_process.upstream.answers.append(canned.json(ANSWER))
    assert (await in_process.post("/v1/chat/completions", CHAT)).status == 200
    reply = await call(in_process.gateway, "GET", "/metrics", [])
    assert reply.status == 404 and b"metrics.enabled" in reply.body


def _budget(scope: str, limit: str) -> Any:
    from datetime import UTC, datetime

    import uuid_utils
    from majordomo_gateway.budgets.scope import parse_scope
    from majordomo_gateway.storage.records import BudgetRecord

    parsed = parse_scope(scope)
    now = datetime.now(UTC)
    return BudgetRecord(id=str(uuid_utils.uuid7()), scope=parsed.text, scope_kind=parsed.kind, scope_key=parsed.key,
                        scope_value=parsed.value, limit_usd=Decimal(limit), period="month", time_zone="UTC",
                        soft=True, alert_at=(), webhook=None, created_at=now, updated_at=now)


async def test_budgets_spend_and_remaining(in_process: Any, canned: Any, call: Any) -> None:
    from datetime import UTC, datetime

    from majordomo_gateway.periods import period_start

    gateway = in_process.gateway
    whole = _budget("global", "10")
    per_feature = _budget("metadata:Feature=*", "0.5")
    for budget in (whole, per_feature):
        await gateway.database.budgets.create(budget, current_start=period_start(datetime.now(UTC), "month", "UTC"))
    await gateway.budgets.refresh()
    rows = []
    for feature in ("faq", "faq", "search"):
        in_process.upstream.answers.append(canned.json(ANSWER))
        reply = await in_process.post("/v1/chat/completions", CHAT, (b"x-majordomo-feature", feature.encode()))
        rows.append((feature, await in_process.row(reply.headers[b"x-majordomo-request-id"])))
    await gateway.budgets.refresh()  # the ledger has the rows now
    got = await _scrape(in_process, call)
    cost = {f: sum(float(r["total_cost"]) for g, r in rows if g == f) for f in ("faq", "search")}
    assert got.value("majordomo_budget_spend_usd", budget=whole.id, scope="global", period="month") == \
        pytest.approx(cost["faq"] + cost["search"])
    assert got.value("majordomo_budget_remaining_usd", budget=whole.id) == \
        pytest.approx(10 - cost["faq"] - cost["search"])
    for feature in ("faq", "search"):
        assert got.value("majordomo_budget_spend_usd", budget=per_feature.id, value=feature) == \
            pytest.approx(cost[feature])
        assert got.value("majordomo_budget_remaining_usd", budget=per_feature.id, value=feature) == \
            pytest.approx(0.5 - cost[feature])
    assert got.value("majordomo_budget_limit_usd", budget=per_feature.id, value="faq") == 0.5
