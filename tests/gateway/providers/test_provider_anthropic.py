"""Anthropic wire format: the Messages API, plain and streamed."""

from __future__ import annotations

import random

import orjson
import pytest
from majordomo_gateway.providers.anthropic import AnthropicProvider, usage_from_anthropic
from majordomo_gateway.providers.base import RequestInfo, UsageResult
from majordomo_gateway.usage import Usage
from provider_testkit import assert_split_invariant, crlf, load, mutations, run_stream

anthropic = AnthropicProvider()
MESSAGES = "/v1/messages"

# 2679 uncached + 1800 cache reads + 2051 cache writes (2000 of them with the 1-hour TTL).
WEB_SEARCH_USAGE = Usage(
    input_tokens=6530,
    output_tokens=503,
    cached_tokens=1800,
    cache_creation_tokens=2051,
    cache_creation_1h_tokens=2000,
    reasoning_tokens=0,
    web_search_requests=2,
)

PAIRS = [
    pytest.param(
        "anthropic_messages.json",
        "anthropic_messages_stream.sse",
        WEB_SEARCH_USAGE,
        "claude-sonnet-4-5-20250929",
        id="cache-thinking-web-search",
    ),
    pytest.param(
        "anthropic_basic.json",
        "anthropic_basic_stream.sse",
        Usage(input_tokens=25, output_tokens=15),
        "claude-3-5-sonnet-20241022",
        id="docs-example",
    ),
]

STREAMS = ["anthropic_messages_stream.sse", "anthropic_basic_stream.sse", "anthropic_stream_error.sse"]


@pytest.mark.parametrize(("body", "stream", "usage", "model"), PAIRS)
def test_json_usage(body: str, stream: str, usage: Usage, model: str) -> None:
    result = anthropic.parse_response(MESSAGES, load(body))
    assert result.usage == usage
    assert result.model == model
    assert result.error is None


@pytest.mark.parametrize(("body", "stream", "usage", "model"), PAIRS)
def test_streamed_usage(body: str, stream: str, usage: Usage, model: str) -> None:
    result = run_stream(
        anthropic, MESSAGES, [load(stream)], RequestInfo(model="claude-sonnet-4-5", stream=True)
    )
    assert result.usage == usage
    assert result.model == model  # the response's (dated) model wins over the request's alias
    assert result.error is None


@pytest.mark.parametrize(("body", "stream", "usage", "model"), PAIRS)
def test_streamed_and_plain_agree(body: str, stream: str, usage: Usage, model: str) -> None:
    assert run_stream(anthropic, MESSAGES, [load(stream)]) == anthropic.parse_response(MESSAGES, load(body))


@pytest.mark.parametrize("stream", STREAMS)
def test_chunk_boundaries_anywhere(stream: str) -> None:
    data = load(stream)
    expected = assert_split_invariant(anthropic, MESSAGES, data)
    assert assert_split_invariant(anthropic, MESSAGES, crlf(data)) == expected


def test_pricing_hints_are_passed_on() -> None:
    assert anthropic.parse_response(MESSAGES, load("anthropic_messages.json")).extra == {
        "service_tier": "standard"
    }


def test_message_delta_overrides_only_the_fields_it_carries() -> None:
    start = {
        "type": "message_start",
        "message": {
            "id": "msg_1",
            "type": "message",
            "role": "assistant",
            "model": "claude-haiku-4-5-20251001",
            "content": [],
            "usage": {
                "input_tokens": 100,
                "cache_read_input_tokens": 50,
                "cache_creation_input_tokens": 10,
                "output_tokens": 1,
            },
        },
    }
    deltas = [
        {"type": "message_delta", "delta": {"stop_reason": None}, "usage": {"output_tokens": 40}},
        {
            "type": "message_delta",
            "delta": {"stop_reason": "end_turn"},
            "usage": {"output_tokens": 90, "cache_read_input_tokens": None},
        },
    ]
    body = b"".join(
        b"event: " + e["type"].encode() + b"\ndata: " + orjson.dumps(e) + b"\n\n" for e in [start, *deltas]
    )
    result = run_stream(anthropic, MESSAGES, [body])
    assert result.usage == Usage(
        input_tokens=160, output_tokens=90, cached_tokens=50, cache_creation_tokens=10
    )


def test_stream_cut_after_message_start_keeps_the_input_tokens() -> None:
    first_event = load("anthropic_messages_stream.sse").split(b"\n\n")[0] + b"\n\n"
    result = run_stream(anthropic, MESSAGES, [first_event])
    assert result.usage == Usage(
        input_tokens=2095 + 1800 + 2051,
        output_tokens=3,
        cached_tokens=1800,
        cache_creation_tokens=2051,
        cache_creation_1h_tokens=2000,
    )


def test_error_event_in_stream() -> None:
    result = run_stream(anthropic, MESSAGES, [load("anthropic_stream_error.sse")])
    assert result.error == "overloaded_error: Overloaded"
    assert result.usage == Usage(input_tokens=472, output_tokens=2)
    assert result.model == "claude-opus-4-1-20250805"


def test_error_body() -> None:
    result = anthropic.parse_response(MESSAGES, load("anthropic_error.json"))
    assert result == UsageResult(error="not_found_error: model: claude-sonnet-9")
    streamed = run_stream(
        anthropic, MESSAGES, [load("anthropic_error.json")], RequestInfo(model="claude-sonnet-9")
    )
    assert streamed.error == result.error
    assert streamed.usage is None


def test_count_tokens_is_not_usage() -> None:
    path = "/v1/messages/count_tokens"
    assert anthropic.handles_path(path)
    assert anthropic.parse_response(path, load("anthropic_count_tokens.json")).usage is None
    # Even a body that looks like a message is not billed on this path.
    assert anthropic.parse_response(path, load("anthropic_messages.json")).usage is None


def test_no_usage_anywhere() -> None:
    body = b'event: message_start\ndata: {"type":"message_start","message":{"model":"claude-x"}}\n\n'
    result = run_stream(anthropic, MESSAGES, [body])
    assert result == UsageResult(model="claude-x")
    assert anthropic.parse_response(MESSAGES, b'{"type":"message","model":"claude-x"}').usage is None


def test_stream_without_event_lines() -> None:
    # Anthropic always names events; a relay that drops `event:` lines must not lose the usage.
    data = b"".join(
        line + b"\n"
        for line in load("anthropic_messages_stream.sse").split(b"\n")
        if not line.startswith(b"event:")
    )
    assert run_stream(anthropic, MESSAGES, [data]).usage == WEB_SEARCH_USAGE


def test_thinking_tokens_when_the_api_breaks_them_out() -> None:
    usage = {"input_tokens": 10, "output_tokens": 300, "output_tokens_details": {"thinking_tokens": 250}}
    assert usage_from_anthropic(usage) == Usage(input_tokens=10, output_tokens=300, reasoning_tokens=250)


def test_buffered_sse_body_given_to_parse_response() -> None:
    assert anthropic.parse_response(MESSAGES, load("anthropic_messages_stream.sse")).usage == WEB_SEARCH_USAGE


def test_handles_path() -> None:
    for path in (
        "/v1/messages",
        "/v1/messages/count_tokens",
        "/v1/messages/batches/msgbatch_1",
        "/v1/messages?beta=true",
    ):
        assert anthropic.handles_path(path), path
    for path in ("/v1/chat/completions", "/v1/messagesx", "/v1/complete", "/"):
        assert not anthropic.handles_path(path), path


def test_credential() -> None:
    assert anthropic.credential({"x-api-key": "sk-ant-1"}, {}) == "sk-ant-1"
    assert anthropic.credential({"authorization": "Bearer sk-ant-2"}, {}) == "sk-ant-2"
    assert anthropic.credential({"x-api-key": "sk-ant-1", "authorization": "Bearer other"}, {}) == "sk-ant-1"
    assert anthropic.credential({"authorization": "Token x"}, {}) is None
    assert anthropic.credential({}, {}) is None


def test_request_info() -> None:
    body = b'{"model":"claude-sonnet-4-5","max_tokens":1024,"stream":true,"messages":[]}'
    assert anthropic.request_info(MESSAGES, body) == RequestInfo(model="claude-sonnet-4-5", stream=True)
    assert anthropic.request_info(MESSAGES, b'{"model":"claude-x","stream":false}') == RequestInfo(
        model="claude-x"
    )
    for bad in (b"", b"{", b"[1]", b"\xff"):
        assert anthropic.request_info(MESSAGES, bad) == RequestInfo()


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"{",
        b"null",
        b'{"usage": [1, 2]}',
        b'{"usage": {"input_tokens": "9", "cache_creation": 5, "server_tool_use": []}}',
        b"event: message_start\ndata: {oops\n\n",
        b'event: message_delta\ndata: {"usage": null}\n\n',
        b"event: error\ndata: not json\n\n",
    ],
)
def test_bad_json_never_raises(body: bytes) -> None:
    assert isinstance(anthropic.parse_response(MESSAGES, body), UsageResult)
    assert isinstance(run_stream(anthropic, MESSAGES, [body]), UsageResult)


@pytest.mark.parametrize("stream", STREAMS)
def test_damaged_streams_never_raise(stream: str, rng: random.Random) -> None:
    for body in mutations(load(stream), rng):
        assert isinstance(run_stream(anthropic, MESSAGES, [body]), UsageResult)


def test_answer_id_and_stop_reason_for_traces() -> None:
    """gen_ai.response.id and gen_ai.response.finish_reasons, plain and streamed."""
    body = orjson.dumps({"id": "msg_01", "type": "message", "model": "claude-sonnet-4-20250514",
                         "stop_reason": "end_turn", "usage": {"input_tokens": 3, "output_tokens": 2}})
    result = anthropic.parse_response("/v1/messages", body)
    assert (result.response_id, result.finish_reasons) == ("msg_01", ["end_turn"])
    streamed = run_stream(anthropic, "/v1/messages", [load("anthropic_messages_stream.sse")])
    assert streamed.response_id and streamed.response_id.startswith("msg_")
    assert streamed.finish_reasons and streamed.finish_reasons[0] in ("end_turn", "max_tokens", "tool_use")
