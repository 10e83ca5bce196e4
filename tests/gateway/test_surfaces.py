"""Every provider surface through the real gateway: what is metered, how keys are recorded, and that
streamed and plain versions of one exchange, finished or abandoned, record the same tokens and cost."""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from majordomo_gateway.pricing import PriceBook
from majordomo_gateway.providers.registry import PROVIDERS
from majordomo_gateway.usage import Usage

from tests.support import GatewayProcess
from tests.support.upstream import MockUpstream

OPENAI_KEY = "sk-test-openai-surfaces-0123456789"
ANTHROPIC_KEY = "sk-ant-test-surfaces-0123456789"
GEMINI_KEY = "AIzaSurfacesGeminiKey0123456789"
CHAT = {"model": "gpt-4.1", "messages": [{"role": "user", "content": "Hello!"}]}
MESSAGES = {"model": "claude-sonnet-4-20250514", "max_tokens": 256, "messages": [{"role": "user", "content": "Hi"}]}
GEMINI = {"contents": [{"role": "user", "parts": [{"text": "Hello!"}]}]}


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


async def request(gw: GatewayProcess, method: str, path: str, body: dict | bytes | None = None,
                  headers: dict[str, str] | None = None) -> tuple[aiohttp.ClientResponse, bytes]:
    all_headers = {"X-Majordomo-Key": gw.key, **(headers or {})}
    data = None if body is None else body if isinstance(body, bytes) else orjson.dumps(body)
    if data is not None:
        all_headers.setdefault("Content-Type", "application/json")
    async with aiohttp.ClientSession(auto_decompress=False) as session, \
            session.request(method, gw.url + path, data=data, headers=all_headers) as response:
        return response, await response.read()


# -- what is not metered -------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "/v1/models", None),
        ("GET", "/v1/models/gpt-4o", None),
        ("GET", "/v1/files", None),
        ("POST", "/v1/batches", {"input_file_id": "file-1", "endpoint": "/v1/chat/completions",
                                 "completion_window": "24h"}),
        ("GET", "/v1/batches/batch_1", None),
    ],
)
async def test_other_openai_endpoints_pass_through_unmetered(
        gateway: GatewayProcess, mock_upstream: MockUpstream, method: str, path: str, body: dict | None) -> None:
    mock_upstream.clear()
    response, received = await request(gateway, method, path, body, {"Authorization": f"Bearer {OPENAI_KEY}"})
    [seen] = mock_upstream.requests
    assert (seen.method, seen.path) == (method, path)
    assert seen.headers["authorization"] == f"Bearer {OPENAI_KEY}"
    assert (response.status, received) == (seen.response.status, seen.response.body)
    row = await gateway.row(response.headers["X-Majordomo-Request-Id"])
    assert (row["provider"], row["route"], row["request_path"], row["request_method"]) == (
        "openai", "openai", path, method)
    assert row["status_code"] == response.status
    assert (row["input_tokens"], row["output_tokens"], row["usage_source"]) == (0, 0, "none")
    assert (row["input_cost"], row["output_cost"], row["total_cost"]) == (None, None, None)
    assert row["provider_api_key_hash"] == sha256(OPENAI_KEY)


def test_objects_that_repeat_usage_are_not_metered() -> None:
    # A batch object (and other retrieved objects) may carry the usage of work billed elsewhere.
    batch = b'{"id":"batch_1","object":"batch","usage":{"input_tokens":500,"output_tokens":90}}'
    openai = PROVIDERS["openai"]
    assert openai.parse_response("/v1/batches/batch_1", batch).usage is None
    assert openai.parse_response("/v1/models", b'{"object":"list","data":[]}').usage is None
    assert openai.parse_response("/v1/embeddings", b'{"usage":{"prompt_tokens":5,"total_tokens":5}}').usage == \
        Usage(5, 0)


@pytest.mark.parametrize(
    "auth",
    [{"x-api-key": ANTHROPIC_KEY}, {"Authorization": f"Bearer {ANTHROPIC_KEY}"}],
    ids=["x-api-key", "bearer"],
)
async def test_anthropic_count_tokens_is_free_and_headers_and_keys_are_kept(
        gateway: GatewayProcess, mock_upstream: MockUpstream, auth: dict[str, str]) -> None:
    headers = {**auth, "anthropic-version": "2023-06-01", "anthropic-beta": "token-counting-2024-11-01,foo-bar"}
    mock_upstream.clear()
    response, received = await request(gateway, "POST", "/v1/messages/count_tokens", MESSAGES,
                                       {**headers, "X-Mock-Usage": '{"input_tokens": 4321}'})
    assert orjson.loads(received) == {"input_tokens": 4321}
    response2, _ = await request(gateway, "POST", "/v1/messages", MESSAGES, headers)
    for seen in mock_upstream.requests:
        for name, value in headers.items():
            assert seen.headers[name.lower()] == value
    count_row = await gateway.row(response.headers["X-Majordomo-Request-Id"])
    assert (count_row["provider"], count_row["request_path"]) == ("anthropic", "/v1/messages/count_tokens")
    assert (count_row["input_tokens"], count_row["usage_source"], count_row["total_cost"]) == (0, "none", None)
    message_row = await gateway.row(response2.headers["X-Majordomo-Request-Id"])
    assert message_row["usage_source"] == "reported" and message_row["total_cost"] is not None
    for row in (count_row, message_row):
        assert row["provider_api_key_hash"] == sha256(ANTHROPIC_KEY)


@pytest.mark.parametrize("where", ["header", "query"])
async def test_gemini_key_from_header_or_query_is_hashed_and_kept_out_of_the_path(
        gateway: GatewayProcess, mock_upstream: MockUpstream, where: str) -> None:
    path = "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse"
    headers = {}
    if where == "query":
        path += f"&key={GEMINI_KEY}"
    else:
        headers["x-goog-api-key"] = GEMINI_KEY
    mock_upstream.clear()
    response, _ = await request(gateway, "POST", path, GEMINI, headers)
    [seen] = mock_upstream.requests
    # The upstream still gets the key where the client put it.
    if where == "query":
        assert seen.query_params["key"] == GEMINI_KEY
    else:
        assert seen.headers["x-goog-api-key"] == GEMINI_KEY
    row = await gateway.row(response.headers["X-Majordomo-Request-Id"])
    assert row["provider_api_key_hash"] == sha256(GEMINI_KEY)
    assert row["request_path"] == "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse"
    assert GEMINI_KEY not in repr(row)


# -- the same exchange, streamed or not ----------------------------------------------------------

@dataclass
class Surface:
    name: str
    path: str
    stream_path: str
    body: dict[str, Any]
    stream_body: dict[str, Any]
    usage: dict[str, int]
    expected: Usage
    provider: str
    model: str
    headers: dict[str, str] = field(default_factory=dict)


OPENAI_USAGE = {"input_tokens": 5000, "output_tokens": 700, "cached_tokens": 2000, "reasoning_tokens": 300}
ANTHROPIC_USAGE = {"input_tokens": 10_000, "output_tokens": 500, "cached_tokens": 4000,
                   "cache_creation_tokens": 3000, "cache_creation_1h_tokens": 1000, "web_search_requests": 2}
GEMINI_USAGE = {"input_tokens": 3000, "output_tokens": 800, "cached_tokens": 1000, "reasoning_tokens": 200,
                "tool_use_prompt_tokens": 100}
GEMINI_NATIVE = "/v1beta/models/gemini-2.5-flash"
SURFACES = [
    Surface("openai-chat", "/v1/chat/completions", "/v1/chat/completions", CHAT,
            {**CHAT, "stream": True, "stream_options": {"include_usage": True}}, OPENAI_USAGE,
            Usage(5000, 700, 2000, reasoning_tokens=300), "openai", "gpt-4.1"),
    # Without include_usage: the gateway asks for usage itself.
    Surface("openai-chat-no-include-usage", "/v1/chat/completions", "/v1/chat/completions", CHAT,
            {**CHAT, "stream": True}, OPENAI_USAGE, Usage(5000, 700, 2000, reasoning_tokens=300), "openai", "gpt-4.1"),
    Surface("openai-completions", "/v1/completions", "/v1/completions",
            {"model": "gpt-3.5-turbo-instruct", "prompt": "Hi"},
            {"model": "gpt-3.5-turbo-instruct", "prompt": "Hi", "stream": True}, {"input_tokens": 1500,
                                                                                 "output_tokens": 200},
            Usage(1500, 200), "openai", "gpt-3.5-turbo-instruct"),
    Surface("openai-responses", "/v1/responses", "/v1/responses", {"model": "o3", "input": "Hi"},
            {"model": "o3", "input": "Hi", "stream": True}, OPENAI_USAGE, Usage(5000, 700, 2000, reasoning_tokens=300),
            "openai", "o3"),
    Surface("anthropic-messages", "/v1/messages", "/v1/messages", MESSAGES, {**MESSAGES, "stream": True},
            ANTHROPIC_USAGE, Usage(10_000, 500, 4000, 3000, 1000, web_search_requests=2), "anthropic",
            "claude-sonnet-4-20250514"),
    Surface("gemini-sse", f"{GEMINI_NATIVE}:generateContent", f"{GEMINI_NATIVE}:streamGenerateContent?alt=sse",
            GEMINI, GEMINI, GEMINI_USAGE, Usage(3000, 800, 1000, reasoning_tokens=200), "gemini",
            "gemini-2.5-flash"),
    Surface("gemini-json-array", f"{GEMINI_NATIVE}:generateContent", f"{GEMINI_NATIVE}:streamGenerateContent",
            GEMINI, GEMINI, GEMINI_USAGE, Usage(3000, 800, 1000, reasoning_tokens=200), "gemini",
            "gemini-2.5-flash"),
    Surface("gemini-openai", "/v1/chat/completions", "/v1/chat/completions", {**CHAT, "model": "gemini-2.5-flash"},
            {**CHAT, "model": "gemini-2.5-flash", "stream": True},
            {k: v for k, v in GEMINI_USAGE.items() if k != "tool_use_prompt_tokens"},
            Usage(3000, 800, 1000, reasoning_tokens=200), "gemini", "gemini-2.5-flash",
            {"X-Majordomo-Provider": "gemini-openai"}),
    Surface("anthropic-openai", "/v1/chat/completions", "/v1/chat/completions",
            {**CHAT, "model": "claude-sonnet-4-20250514"},
            {**CHAT, "model": "claude-sonnet-4-20250514", "stream": True}, ANTHROPIC_USAGE,
            Usage(10_000, 500, 4000, 3000, 1000, web_search_requests=2), "anthropic", "claude-sonnet-4-20250514",
            {"X-Majordomo-Provider": "anthropic-openai"}),
]
TOKEN_COLUMNS = ("input_tokens", "output_tokens", "cached_tokens", "cache_creation_tokens",
                 "cache_creation_1h_tokens", "reasoning_tokens", "web_search_requests")
COST_COLUMNS = ("input_cost", "output_cost", "total_cost")
BOOK = PriceBook()


def cost(value: Any) -> Decimal | None:
    return None if value is None else Decimal(str(value)).quantize(Decimal("1e-10"))


def recorded(row: dict[str, Any]) -> tuple[Any, ...]:
    return (row["provider"], row["model"], row["usage_source"], row["model_alias_found"],
            *(row[c] for c in TOKEN_COLUMNS), *(cost(row[c]) for c in COST_COLUMNS))


def surface_headers(surface: Surface, **extra: str) -> dict[str, str]:
    return {**surface.headers, "X-Mock-Usage": orjson.dumps(surface.usage).decode(), **extra}


@pytest.mark.parametrize("surface", SURFACES, ids=[s.name for s in SURFACES])
async def test_streamed_and_plain_exchanges_record_the_same_tokens_and_cost(
        gateway: GatewayProcess, surface: Surface) -> None:
    plain, _ = await request(gateway, "POST", surface.path, surface.body, surface_headers(surface))
    streamed, body = await request(gateway, "POST", surface.stream_path, surface.stream_body,
                                   surface_headers(surface, **{"X-Mock-Chunks": "7"}))
    assert plain.status == streamed.status == 200
    assert body  # the stream was relayed
    plain_row = await gateway.row(plain.headers["X-Majordomo-Request-Id"])
    stream_row = await gateway.row(streamed.headers["X-Majordomo-Request-Id"])
    assert (plain_row["streamed"], stream_row["streamed"]) == (False, True)
    assert recorded(stream_row) == recorded(plain_row)

    # ... and both are what the provider reported, priced with the price book.
    assert tuple(plain_row[c] for c in TOKEN_COLUMNS) == (
        surface.expected.input_tokens, surface.expected.output_tokens, surface.expected.cached_tokens,
        surface.expected.cache_creation_tokens, surface.expected.cache_creation_1h_tokens,
        surface.expected.reasoning_tokens, surface.expected.web_search_requests)
    price = BOOK.price(surface.provider, surface.model, surface.expected)
    assert price.found
    assert (plain_row["provider"], plain_row["model"], plain_row["usage_source"]) == (
        surface.provider, surface.model, "reported")
    assert tuple(cost(plain_row[c]) for c in COST_COLUMNS) == (
        cost(price.input_cost), cost(price.output_cost), cost(price.total_cost))


# -- streams the client leaves -------------------------------------------------------------------

STREAMING = SURFACES


async def abandon(gw: GatewayProcess, surface: Surface, **extra: str) -> str:
    """Start the stream, read its first bytes, hang up; the request id."""
    headers = {"X-Majordomo-Key": gw.key, **surface_headers(surface, **extra)}
    async with aiohttp.ClientSession() as session:
        response = await session.post(gw.url + surface.stream_path, json=surface.stream_body, headers=headers)
        assert response.status == 200
        await response.content.readany()
        response.close()
    return response.headers["X-Majordomo-Request-Id"]


@pytest.mark.parametrize("surface", STREAMING, ids=[s.name for s in STREAMING])
async def test_abandoned_stream_is_aborted_and_priced_with_the_final_usage(
        gateway: GatewayProcess, surface: Surface) -> None:
    request_id = await abandon(gateway, surface, **{"X-Mock-Scenario": "slow", "X-Mock-Delay-Ms": "60",
                                                    "X-Mock-Chunks": "8"})
    row = await gateway.row(request_id, timeout=15)
    assert row["aborted"] is True and row["streamed"] is True
    assert row["usage_source"] == "reported"
    assert (row["input_tokens"], row["output_tokens"], row["cached_tokens"]) == (
        surface.expected.input_tokens, surface.expected.output_tokens, surface.expected.cached_tokens)
    price = BOOK.price(surface.provider, surface.model, surface.expected)
    assert cost(row["total_cost"]) == cost(price.total_cost)


@pytest.mark.parametrize("surface", [s for s in STREAMING if s.name in ("anthropic-messages", "gemini-sse",
                                                                        "openai-chat-no-include-usage")],
                         ids=lambda s: s.name)
async def test_abandoned_stream_without_usage_is_missing(gateway: GatewayProcess, surface: Surface) -> None:
    request_id = await abandon(gateway, surface, **{"X-Mock-Scenario": "slow,no-usage", "X-Mock-Delay-Ms": "30"})
    row = await gateway.row(request_id, timeout=15)
    assert (row["aborted"], row["usage_source"], row["total_cost"]) == (True, "missing", None)


async def test_abandoned_stream_is_read_only_within_bounds(mock_upstream: MockUpstream, tmp_path: Path) -> None:
    gw = GatewayProcess(database_url=f"sqlite:///{tmp_path / 'm.db'}", upstream_url=mock_upstream.url,
                        workdir=tmp_path, extra_env={"MAJORDOMO_PROXY_ABANDONED_STREAM_MAX_SECONDS": "0.3"}).start()
    try:
        anthropic = next(s for s in SURFACES if s.name == "anthropic-messages")
        # 40 events 100 ms apart: 4 s of stream, far past the 0.3 s the gateway may spend on it.
        request_id = await abandon(gw, anthropic, **{"X-Mock-Scenario": "slow", "X-Mock-Delay-Ms": "100",
                                                     "X-Mock-Chunks": "40"})
        started = asyncio.get_running_loop().time()
        row = await gw.row(request_id, timeout=15)
        assert asyncio.get_running_loop().time() - started < 2.5
        assert row["aborted"] is True
        # message_start came before the client left; message_delta, with the final output count, never.
        assert row["output_tokens"] < anthropic.expected.output_tokens
    finally:
        gw.stop()


# -- streams that fail ---------------------------------------------------------------------------

ERRORS = {
    "openai-chat": b'data: {"error"',
    "openai-chat-no-include-usage": b'data: {"error"',
    "openai-completions": b'data: {"error"',
    "openai-responses": b"event: error",
    "anthropic-messages": b"event: error",
    "gemini-sse": b'data: {"error"',
    "gemini-json-array": b'"error"',
    "gemini-openai": b'data: {"error"',
    "anthropic-openai": b'data: {"error"',
}


@pytest.mark.parametrize("surface", SURFACES, ids=[s.name for s in SURFACES])
async def test_in_stream_errors_reach_the_client_and_the_row(gateway: GatewayProcess, surface: Surface) -> None:
    response, body = await request(gateway, "POST", surface.stream_path, surface.stream_body,
                                   surface_headers(surface, **{"X-Mock-Scenario": "stream-error",
                                                               "X-Mock-Error-Message": "Upstream melted"}))
    assert response.status == 200
    assert ERRORS[surface.name] in body and b"Upstream melted" in body
    row = await gateway.row(response.headers["X-Majordomo-Request-Id"])
    assert row["error_message"] and "Upstream melted" in row["error_message"]
    assert row["aborted"] is False


@pytest.mark.parametrize("surface", SURFACES, ids=[s.name for s in SURFACES])
async def test_a_dropped_upstream_connection_breaks_the_client_stream(
        gateway: GatewayProcess, surface: Surface) -> None:
    headers = {"X-Majordomo-Key": gateway.key, **surface_headers(surface, **{"X-Mock-Scenario": "cut-stream",
                                                                            "X-Mock-Chunks": "6"})}
    async with aiohttp.ClientSession() as session, \
            session.post(gateway.url + surface.stream_path, json=surface.stream_body, headers=headers) as response:
        assert response.status == 200
        request_id = response.headers["X-Majordomo-Request-Id"]
        with pytest.raises(aiohttp.ClientPayloadError):
            await response.read()
    row = await gateway.row(request_id)
    assert "upstream stream broken" in row["error_message"]
    assert row["usage_source"] in ("missing", "reported")
