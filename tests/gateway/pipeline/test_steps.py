"""Each pipeline step on its own, over a hand-made Exchange."""

from __future__ import annotations

import time
from collections.abc import MutableMapping
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from majordomo_gateway.config import ProxySettings, Settings
from majordomo_gateway.pricing import PriceBook
from majordomo_gateway.pricing.price import Price
from majordomo_gateway.providers.base import UsageResult
from majordomo_gateway.proxy.errors import GatewayError
from majordomo_gateway.proxy.exchange import Exchange
from majordomo_gateway.proxy.metering import apply_result, meter, price
from majordomo_gateway.proxy.pipeline import MAX_REQUEST_BODY, accept, forward, prepare, read_body, route
from majordomo_gateway.proxy.routing import Router
from majordomo_gateway.proxy.upstream import UpstreamConnectError, UpstreamTimeout
from majordomo_gateway.storage.records import KeyRecord
from majordomo_gateway.usage import Usage

NOW = datetime(2026, 1, 2, tzinfo=UTC)
KEY = KeyRecord(id="key-1", name="k", description=None, key_prefix="mdm_sk_x", created_at=NOW, updated_at=NOW,
                revoked_at=None, last_used_at=None, request_count=0)


def _exchange(path: str = "/v1/chat/completions", headers: list[tuple[bytes, bytes]] | None = None,
              messages: list[MutableMapping[str, Any]] | None = None) -> Exchange:
    scope = {"type": "http", "method": "POST", "path": path, "raw_path": path.encode(), "query_string": b"",
             "headers": headers or []}
    queue = list(messages or [{"type": "http.request", "body": b"", "more_body": False}])

    async def receive() -> MutableMapping[str, Any]:
        return queue.pop(0)

    async def send(message: MutableMapping[str, Any]) -> None:
        raise AssertionError("a step sent something")

    return Exchange(scope, receive, send, time.perf_counter(), NOW)


def _routed(body: bytes, *headers: tuple[bytes, bytes]) -> Exchange:
    ex = _exchange(headers=[(b"authorization", b"Bearer sk-abc"), *headers])
    accept(ex, ProxySettings())
    route(ex, Router(Settings().providers))
    ex.key, ex.body = KEY, body
    return ex


def test_accept_splits_majordomo_headers_from_forwarded_ones() -> None:
    ex = _exchange(headers=[(b"x-majordomo-key", b"mdm_sk_1"), (b"x-majordomo-team", b"search"),
                            (b"authorization", b"Bearer sk-abc")])
    accept(ex, ProxySettings())
    assert ex.headers.majordomo_key == "mdm_sk_1" and ex.headers.metadata == {"Team": "search"}
    assert ex.headers.forward == [("authorization", "Bearer sk-abc")]
    assert (ex.path, ex.raw_path, ex.query) == ("/v1/chat/completions", b"/v1/chat/completions", b"")


@pytest.mark.parametrize(("raw_path", "path"), [("/v1/chat/completion%73", "/v1/chat/completions"),
                                               ("/v1/mess%61ges", "/v1/messages"),
                                               ("/v1/embedding%73", "/v1/embeddings")])
def test_accept_decides_on_one_normalised_path(raw_path: str, path: str) -> None:
    ex = _exchange()
    # What uvicorn hands over: `path` percent-decoded, `raw_path` as the client sent it.
    ex.scope.update(path=path, raw_path=raw_path.encode())
    accept(ex, ProxySettings())
    assert (ex.path, ex.raw_path) == (path, path.encode())


def test_an_encoded_path_is_routed_billed_and_recorded_as_one() -> None:
    ex = _exchange()
    ex.scope.update(path="/v1/chat/completions", raw_path=b"/v1/chat/completion%73",
                    headers=[(b"authorization", b"Bearer sk-abc")])
    accept(ex, ProxySettings())
    route(ex, Router(Settings().providers))
    ex.key, ex.body = KEY, b'{"model": "gpt-4.1", "stream": true}'
    prepare(ex)
    assert ex.route is not None and ex.record is not None
    assert ex.route.name == "openai" and ex.record.request_path == "/v1/chat/completions"
    assert ex.upstream_path == b"/v1/chat/completions"
    assert ex.route.provider.bills(ex.upstream_path.decode())


def test_accept_rejects_too_much_metadata() -> None:
    ex = _exchange(headers=[(b"x-majordomo-a", b"1"), (b"x-majordomo-b", b"2")])
    with pytest.raises(GatewayError) as caught:
        accept(ex, ProxySettings(max_metadata_headers=1))
    assert (caught.value.status, caught.value.code) == (400, "invalid_metadata")


def test_route_by_path_and_by_header() -> None:
    router = Router(Settings().providers)
    ex = _exchange("/v1/messages")
    accept(ex, ProxySettings())
    route(ex, router)
    assert ex.route is not None and ex.route.name == "anthropic"
    ex = _exchange(headers=[(b"x-majordomo-provider", b"nope")])
    accept(ex, ProxySettings())
    with pytest.raises(GatewayError) as caught:
        route(ex, router)
    assert (caught.value.status, caught.value.code) == (400, "unknown_provider")


async def test_read_body_joins_parts_and_bounds_the_size() -> None:
    ex = _exchange(messages=[{"type": "http.request", "body": b"ab", "more_body": True},
                             {"type": "http.request", "body": b"cd", "more_body": False}])
    await read_body(ex)
    assert ex.body == b"abcd"
    half = b"x" * (MAX_REQUEST_BODY // 2 + 1)
    ex = _exchange(messages=[{"type": "http.request", "body": half, "more_body": True},
                             {"type": "http.request", "body": half, "more_body": True}])
    with pytest.raises(GatewayError) as caught:
        await read_body(ex)
    assert caught.value.status == 413


def test_prepare_makes_the_row_without_secrets() -> None:
    ex = _routed(b'{"model":"gpt-4o-mini","stream":true}', (b"x-majordomo-team", b"search"))
    prepare(ex)
    record = ex.record
    assert record is not None
    assert (record.provider, record.route, record.model, record.streamed) == ("openai", "openai", "gpt-4o-mini", True)
    assert record.majordomo_api_key_id == "key-1" and record.raw_metadata == {"Team": "search"}
    assert record.provider_api_key_hash is not None and "sk-abc" not in record.provider_api_key_hash
    # a route without an adapter sends the client's request on as it came
    assert ex.adapted is None and ex.body == b'{"model":"gpt-4o-mini","stream":true}'
    assert ex.upstream_path == b"/v1/chat/completions" and ex.forward == [("authorization", "Bearer sk-abc")]


def test_prepare_stops_the_gemini_trap_before_a_row() -> None:
    ex = _routed(b'{"model":"gemini-2.0-flash"}')
    with pytest.raises(GatewayError) as caught:
        prepare(ex)
    assert caught.value.code == "gemini_model_on_openai_route" and ex.record is None


@pytest.mark.parametrize(("error", "status", "code", "recorded"), [
    (UpstreamTimeout("slow"), 504, "upstream_timeout", "openai upstream timed out"),
    (UpstreamConnectError("refused"), 502, "upstream_unreachable", "openai upstream unreachable: refused"),
])
async def test_forward_turns_upstream_failures_into_gateway_errors(
        memory_upstream: Any, error: Exception, status: int, code: str, recorded: str) -> None:
    ex = _routed(b'{"model":"gpt-4o-mini"}')
    prepare(ex)
    memory_upstream.answers.append(error)
    with pytest.raises(GatewayError) as caught:
        await forward(ex, memory_upstream)
    assert (caught.value.status, caught.value.code, caught.value.provider) == (status, code, "openai")
    assert caught.value.record_message == recorded
    assert memory_upstream.requests[0].target == b"/v1/chat/completions"


def test_meter_reads_a_captured_body_and_price_costs_it() -> None:
    ex = _routed(b'{"model":"gpt-4o-mini"}')
    prepare(ex)
    assert ex.record is not None
    ex.record.status_code = 200
    ex.captured = [b'{"model":"gpt-4o-mini-2024-07-18",',
                   b'"usage":{"prompt_tokens":1000,"completion_tokens":100,"total_tokens":1100}}']
    meter(ex)
    assert (ex.record.input_tokens, ex.record.output_tokens, ex.record.usage_source) == (1000, 100, "reported")
    price(ex.record, PriceBook(None))
    assert ex.record.total_cost is not None and ex.record.total_cost > 0


def test_meter_prefixes_a_broken_stream_and_keeps_the_error_body() -> None:
    ex = _routed(b'{"model":"gpt-4o-mini"}')
    prepare(ex)
    assert ex.record is not None
    ex.record.status_code = 500
    ex.captured = [b'{"error":"boom"}']
    ex.upstream_broken = "upstream stream broken: reset"
    meter(ex)
    assert ex.record.error_message == 'upstream stream broken: reset; {"error":"boom"}'


def test_a_billed_answer_without_usage_is_missing() -> None:
    ex = _routed(b'{"model":"gpt-4o-mini"}')
    prepare(ex)
    assert ex.record is not None and ex.route is not None
    ex.record.status_code = 200
    apply_result(ex.record, ex.route, UsageResult(), ex.upstream_path)
    assert ex.record.usage_source == "missing"
    apply_result(ex.record, ex.route, UsageResult(usage=Usage(1, 2)), ex.upstream_path)
    assert ex.record.usage_source == "reported"


def test_price_leaves_unreported_usage_unpriced() -> None:
    ex = _routed(b'{"model":"gpt-4o-mini"}')
    prepare(ex)
    assert ex.record is not None
    price(ex.record, PriceBook(None))
    assert ex.record.total_cost is None


def test_invalid_usage_is_recorded_with_its_reason_before_any_error() -> None:
    ex = _routed(b'{"model":"gpt-4o-mini"}')
    prepare(ex)
    assert ex.record is not None and ex.route is not None
    ex.record.status_code = 200
    apply_result(ex.record, ex.route, UsageResult(invalid_usage="invalid usage: prompt_tokens=-1", error="boom"),
                 ex.upstream_path)
    assert (ex.record.usage_source, ex.record.error_message) == ("invalid", "invalid usage: prompt_tokens=-1; boom")
    price(ex.record, PriceBook(None))
    assert (ex.record.input_tokens, ex.record.total_cost) == (0, None)


class _Overpriced:
    def __init__(self, total: Decimal) -> None:
        self.total = total

    def price(self, provider: str, model: str | None, usage: Usage, *, when: datetime | None = None) -> Price:
        return Price(Decimal(0), self.total, self.total, True, "m")


@pytest.mark.parametrize(("total", "fits"), [(Decimal("9999999999.9999999999"), True),
                                             (Decimal("9999999999.99999999995"), False),
                                             (Decimal(10) ** 10, False), (Decimal("1e30"), False)])
def test_a_cost_the_columns_cannot_hold_makes_the_usage_invalid(total: Decimal, fits: bool) -> None:
    ex = _routed(b'{"model":"gpt-4o-mini"}')
    prepare(ex)
    assert ex.record is not None and ex.route is not None
    ex.record.status_code = 200
    apply_result(ex.record, ex.route, UsageResult(usage=Usage(1000, 100)), ex.upstream_path)
    price(ex.record, _Overpriced(total))  # type: ignore[arg-type]
    if fits:
        assert (ex.record.usage_source, ex.record.total_cost, ex.record.input_tokens) == ("reported", total, 1000)
        return
    assert (ex.record.usage_source, ex.record.total_cost, ex.record.input_tokens) == ("invalid", None, 0)
    assert ex.record.error_message is not None
    assert ex.record.error_message.startswith(f"cost {total} USD does not fit the cost columns")
