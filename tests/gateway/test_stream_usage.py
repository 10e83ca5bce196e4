"""Usage for OpenAI-style streams whose client did not ask for it (proxy.inject_stream_usage)."""

from __future__ import annotations

import random
import re
from pathlib import Path

import aiohttp
import orjson
import pytest
from majordomo_gateway.proxy.stream_usage import UsageChunkFilter, inject_include_usage

from tests.support import GatewayProcess
from tests.support.upstream import MockUpstream

OPENAI_KEY = "sk-test-openai-inject-0123456789"
USAGE = {"input_tokens": 1234, "output_tokens": 321, "cached_tokens": 1000, "reasoning_tokens": 21}
_IDS = re.compile(rb"mock\d{6}")
_CREATED = re.compile(rb'"created":\d+')


def normalised(body: bytes) -> bytes:
    """A response with the mock's per-request ids and timestamps blanked out."""
    return _CREATED.sub(b'"created":0', _IDS.sub(b"mockID", body))


async def raw_post(url: str, body: bytes, headers: dict[str, str]) -> tuple[aiohttp.ClientResponse, bytes]:
    async with aiohttp.ClientSession(auto_decompress=False) as session, \
            session.post(url, data=body, headers={"Content-Type": "application/json", **headers}) as response:
        return response, await response.read()


TOOLS = [{"type": "function", "function": {
    "name": "lookup", "parameters": {"type": "object", "properties": {"q": {"type": "string"}}}}}]
CHAT = {"model": "gpt-4o", "stream": True, "messages": [{"role": "user", "content": "Hello!"}]}
GEMINI_CHAT = {**CHAT, "model": "gemini-2.5-flash"}
CASES = [
    # (route header, gateway path, mock path, body, extra mock headers)
    pytest.param(None, "/v1/chat/completions", "/v1/chat/completions", CHAT, {}, id="openai-chat"),
    pytest.param(None, "/v1/chat/completions", "/v1/chat/completions", {**CHAT, "tools": TOOLS},
                 {"X-Mock-Scenario": "tool-call"}, id="openai-chat-tool-call"),
    pytest.param(None, "/v1/completions", "/v1/completions",
                 {"model": "gpt-3.5-turbo-instruct", "stream": True, "prompt": "Say hello"}, {},
                 id="openai-completions"),
    pytest.param("gemini-openai", "/v1/chat/completions", "/v1beta/openai/chat/completions", GEMINI_CHAT, {},
                 id="gemini-openai-chat"),
    pytest.param("gemini-openai", "/v1/chat/completions", "/v1beta/openai/chat/completions",
                 {**GEMINI_CHAT, "tools": TOOLS}, {"X-Mock-Scenario": "tool-call"}, id="gemini-openai-tool-call"),
]


@pytest.mark.parametrize(("route", "path", "mock_path", "body", "scenario"), CASES)
async def test_client_gets_the_stream_it_asked_for_and_the_row_gets_exact_usage(
        gateway: GatewayProcess, mock_upstream: MockUpstream, route: str | None, path: str, mock_path: str,
        body: dict, scenario: dict[str, str]) -> None:
    # Deliberately odd formatting: everything but the injected field must reach the upstream as sent.
    client_body = orjson.dumps(body).replace(b'":', b'":  ')
    mock_headers = {"X-Mock-Usage": orjson.dumps(USAGE).decode(), "X-Mock-Chunks": "4", **scenario,
                    "Authorization": f"Bearer {OPENAI_KEY}"}

    _, direct = await raw_post(mock_upstream.url + mock_path, client_body, mock_headers)
    assert b'"usage"' not in direct  # what a client without include_usage gets from the provider

    mock_upstream.clear()
    headers = {"X-Majordomo-Key": gateway.key, **mock_headers, **({"X-Majordomo-Provider": route} if route else {})}
    response, relayed = await raw_post(gateway.url + path, client_body, headers)
    assert response.status == 200
    assert normalised(relayed) == normalised(direct)

    [seen] = mock_upstream.requests
    assert seen.body == b'{"stream_options":{"include_usage":true},' + client_body[1:]
    upstream_sent = seen.response.body
    assert b'"choices":[]' in upstream_sent and b'"usage":null' in upstream_sent  # what the filter removed

    row = await gateway.row(response.headers["X-Majordomo-Request-Id"])
    assert row["usage_source"] == "reported"
    # Legacy completions report only prompt and completion tokens.
    details = (1000, 21) if "chat" in path else (0, 0)
    assert (row["input_tokens"], row["output_tokens"], row["cached_tokens"], row["reasoning_tokens"]) == (
        1234, 321, *details)
    assert row["streamed"] is True
    assert row["total_cost"] is not None and row["model_alias_found"] is True


async def test_a_client_that_asks_for_usage_gets_the_upstream_bytes_untouched(
        gateway: GatewayProcess, mock_upstream: MockUpstream) -> None:
    body = orjson.dumps({"model": "gpt-4o", "stream": True, "stream_options": {"include_usage": True},
                         "messages": [{"role": "user", "content": "Hi"}]})
    mock_upstream.clear()
    _, relayed = await raw_post(gateway.url + "/v1/chat/completions", body,
                                       {"X-Majordomo-Key": gateway.key})
    [seen] = mock_upstream.requests
    assert seen.body == body
    assert relayed == seen.response.body
    assert b'"choices":[]' in relayed


async def test_include_usage_false_is_overridden_and_the_extra_chunk_hidden(
        gateway: GatewayProcess, mock_upstream: MockUpstream) -> None:
    body = {"model": "gpt-4o", "stream": True, "stream_options": {"include_usage": False, "x": 1},
            "messages": [{"role": "user", "content": "Hi"}]}
    mock_upstream.clear()
    response, relayed = await raw_post(gateway.url + "/v1/chat/completions", orjson.dumps(body),
                                       {"X-Majordomo-Key": gateway.key, **{"X-Mock-Usage": '{"input_tokens": 77}'}})
    [seen] = mock_upstream.requests
    assert seen.json()["stream_options"] == {"include_usage": True, "x": 1}
    assert b'"usage"' not in relayed and relayed.endswith(b"data: [DONE]\n\n")
    row = await gateway.row(response.headers["X-Majordomo-Request-Id"])
    assert (row["input_tokens"], row["usage_source"]) == (77, "reported")


async def test_non_streamed_requests_are_not_touched(gateway: GatewayProcess, mock_upstream: MockUpstream) -> None:
    body = b'{"model": "gpt-4o", "messages": [{"role": "user", "content": "Hi"}]}'
    mock_upstream.clear()
    await raw_post(gateway.url + "/v1/chat/completions", body, {"X-Majordomo-Key": gateway.key})
    assert mock_upstream.requests[-1].body == body


async def test_injection_can_be_turned_off(mock_upstream: MockUpstream, tmp_path: Path) -> None:
    gw = GatewayProcess(database_url=f"sqlite:///{tmp_path / 'm.db'}", upstream_url=mock_upstream.url,
                        workdir=tmp_path, extra_env={"MAJORDOMO_PROXY_INJECT_STREAM_USAGE": "false"}).start()
    try:
        body = b'{"model": "gpt-4o", "stream": true, "messages": [{"role": "user", "content": "Hi"}]}'
        mock_upstream.clear()
        response, relayed = await raw_post(gw.url + "/v1/chat/completions", body, {"X-Majordomo-Key": gw.key})
        [seen] = mock_upstream.requests
        assert seen.body == body
        assert relayed == seen.response.body
        row = await gw.row(response.headers["X-Majordomo-Request-Id"])
        assert (row["usage_source"], row["input_tokens"], row["total_cost"]) == ("missing", 0, None)
    finally:
        gw.stop()


# -- the pieces, without a network ---------------------------------------------------------------

CHUNK = b'data: {"id":"c1","choices":[{"index":0,"delta":{"content":"a \\"usage\\":null, b"}}],"usage":null}'
USAGE_ONLY = b'data: {"id":"c1","choices":[],"usage":{"prompt_tokens":5,"completion_tokens":2}}'
CLEAN = b'data: {"id":"c1","choices":[{"index":0,"delta":{"content":"a \\"usage\\":null, b"}}]}'


@pytest.mark.parametrize("newline", [b"\n", b"\r\n"], ids=["lf", "crlf"])
def test_filter_output_does_not_depend_on_chunking(newline: bytes) -> None:
    sep = newline + newline
    upstream = CHUNK + sep + CHUNK.replace(b"c1", b"c2") + sep + USAGE_ONLY + sep + b"data: [DONE]" + sep
    expected = CLEAN + sep + CLEAN.replace(b"c1", b"c2") + sep + b"data: [DONE]" + sep
    rng = random.Random(7)
    splits = [[upstream], [upstream[i:i + 1] for i in range(len(upstream))]]
    for _ in range(50):
        cuts = sorted(rng.sample(range(1, len(upstream)), 5))
        splits.append([upstream[a:b] for a, b in zip([0, *cuts], [*cuts, len(upstream)], strict=True)])
    for chunks in splits:
        stream_filter = UsageChunkFilter()
        out = b"".join(stream_filter.feed(chunk) for chunk in chunks) + stream_filter.finish()
        assert out == expected


def test_filter_handles_spaced_json_and_keeps_usage_on_a_chunk_with_choices() -> None:
    spaced = b'data: {"id": "c", "choices": [{"index": 0}], "usage": null}\n\n'
    spaced_usage_only = b'data: {"id": "c", "choices": [], "usage": {"prompt_tokens": 5}}\n\n'
    # Servers that put usage on the finish_reason chunk send it whatever include_usage says.
    last_with_usage = b'data: {"id":"c","choices":[{"finish_reason":"stop"}],"usage":{"prompt_tokens":5}}\n\n'
    stream_filter = UsageChunkFilter()
    out = stream_filter.feed(spaced + spaced_usage_only + last_with_usage) + stream_filter.finish()
    assert out == b'data: {"id": "c", "choices": [{"index": 0}]}\n\n' + last_with_usage


@pytest.mark.parametrize(
    ("body", "include_usage", "expected"),
    [
        (b'{"model":"m","stream":true}', None, b'{"stream_options":{"include_usage":true},"model":"m","stream":true}'),
        (b'  {\n "stream": true }', None, b'  {"stream_options":{"include_usage":true},\n "stream": true }'),
        (b'{"stream":true,"stream_options":{"include_usage":false}}', False,
         b'{"stream":true,"stream_options":{"include_usage":true}}'),
        (b'{"stream":true,"stream_options":null}', False, b'{"stream":true,"stream_options":{"include_usage":true}}'),
    ],
)
def test_inject_include_usage(body: bytes, include_usage: bool | None, expected: bytes) -> None:
    assert inject_include_usage(body, include_usage) == expected
    assert orjson.loads(expected)["stream_options"]["include_usage"] is True
