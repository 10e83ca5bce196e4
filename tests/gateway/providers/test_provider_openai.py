"""OpenAI wire format: Chat Completions, Completions, Embeddings, Responses (plain and streamed)."""

from __future__ import annotations

import random

import orjson
import pytest
from majordomo_gateway.providers.base import RequestInfo, UsageResult
from majordomo_gateway.providers.openai import OpenAIProvider, usage_from_openai
from majordomo_gateway.usage import Usage
from provider_testkit import assert_split_invariant, crlf, load, mutations, run_stream

openai = OpenAIProvider()

CHAT_USAGE = Usage(input_tokens=1832, output_tokens=278, cached_tokens=1536, reasoning_tokens=192)
RESPONSES_USAGE = Usage(input_tokens=1290, output_tokens=213, cached_tokens=1152, reasoning_tokens=192)
COMPLETIONS_USAGE = Usage(input_tokens=5, output_tokens=7)

# (path, non-streamed body, the same exchange streamed, expected usage, expected model)
SURFACES = [
    pytest.param(
        "/v1/chat/completions",
        "openai_chat.json",
        "openai_chat_stream.sse",
        CHAT_USAGE,
        "o4-mini-2025-04-16",
        id="chat",
    ),
    pytest.param(
        "/v1/responses",
        "openai_responses.json",
        "openai_responses_stream.sse",
        RESPONSES_USAGE,
        "o3-2025-04-16",
        id="responses",
    ),
    pytest.param(
        "/v1/completions",
        "openai_completions.json",
        "openai_completions_stream.sse",
        COMPLETIONS_USAGE,
        "gpt-3.5-turbo-instruct:20230824-v2",
        id="completions",
    ),
]

STREAMS = [
    ("/v1/chat/completions", "openai_chat_stream.sse"),
    ("/v1/chat/completions", "openai_chat_stream_no_usage.sse"),
    ("/v1/chat/completions", "openai_chat_stream_error.sse"),
    ("/v1/completions", "openai_completions_stream.sse"),
    ("/v1/responses", "openai_responses_stream.sse"),
    ("/v1/responses", "openai_responses_stream_failed.sse"),
    ("/v1/responses", "openai_responses_stream_incomplete.sse"),
]


@pytest.mark.parametrize(("path", "body", "stream", "usage", "model"), SURFACES)
def test_json_usage(path: str, body: str, stream: str, usage: Usage, model: str) -> None:
    result = openai.parse_response(path, load(body))
    assert result.usage == usage
    assert result.model == model
    assert result.error is None


@pytest.mark.parametrize(("path", "body", "stream", "usage", "model"), SURFACES)
def test_streamed_usage(path: str, body: str, stream: str, usage: Usage, model: str) -> None:
    result = run_stream(openai, path, [load(stream)], RequestInfo(model="requested-alias", stream=True))
    assert result.usage == usage
    assert result.model == model  # the response's model wins over the request's
    assert result.error is None


@pytest.mark.parametrize(("path", "body", "stream", "usage", "model"), SURFACES)
def test_streamed_and_plain_agree(path: str, body: str, stream: str, usage: Usage, model: str) -> None:
    assert run_stream(openai, path, [load(stream)]) == openai.parse_response(path, load(body))


@pytest.mark.parametrize(("path", "stream"), STREAMS)
def test_chunk_boundaries_anywhere(path: str, stream: str) -> None:
    data = load(stream)
    expected = assert_split_invariant(openai, path, data)
    assert assert_split_invariant(openai, path, crlf(data)) == expected


def test_embeddings_have_input_only() -> None:
    result = openai.parse_response("/v1/embeddings", load("openai_embeddings.json"))
    assert result.usage == Usage(input_tokens=8)
    assert result.model == "text-embedding-3-small"


def test_service_tier_is_passed_on() -> None:
    assert openai.parse_response("/v1/chat/completions", load("openai_chat.json")).extra == {
        "service_tier": "default"
    }
    streamed = run_stream(openai, "/v1/responses", [load("openai_responses_stream.sse")])
    assert streamed.extra == {"service_tier": "default"}


def test_stream_without_include_usage_has_no_usage() -> None:
    result = run_stream(
        openai, "/v1/chat/completions", [load("openai_chat_stream_no_usage.sse")], RequestInfo(model="x")
    )
    assert result.usage is None
    assert result.model == "gpt-4o-mini-2024-07-18"
    assert result.error is None


def test_error_inside_chat_stream() -> None:
    result = run_stream(openai, "/v1/chat/completions", [load("openai_chat_stream_error.sse")])
    assert result.usage is None
    assert result.model == "gpt-4.1-2025-04-14"
    assert result.error == (
        "server_error: The server had an error while processing your request. Sorry about that!"
    )


def test_error_only_stream_falls_back_to_the_requested_model() -> None:
    body = (
        b'data: {"error":{"message":"Rate limit reached","type":"requests","code":"rate_limit_exceeded"}}\n\n'
    )
    result = run_stream(openai, "/v1/chat/completions", [body], RequestInfo(model="gpt-4o"))
    assert result == UsageResult(usage=None, model="gpt-4o", error="requests: Rate limit reached")


def test_responses_failed_carries_usage_and_error() -> None:
    result = run_stream(openai, "/v1/responses", [load("openai_responses_stream_failed.sse")])
    assert result.usage == Usage(input_tokens=96)
    assert result.model == "gpt-4.1-2025-04-14"
    assert result.error is not None
    assert result.error.startswith("server_error: The model produced invalid content")


def test_responses_failed_without_usage_still_reports_the_error() -> None:
    failed = (
        b'event: response.failed\ndata: {"type":"response.failed","sequence_number":2,"response":{"id":"r",'
        b'"object":"response","status":"failed","error":{"code":"server_error","message":"Boom"},'
        b'"model":"gpt-4.1-2025-04-14","output":[],"usage":null}}\n\n'
    )
    result = run_stream(openai, "/v1/responses", [failed])
    assert result == UsageResult(model="gpt-4.1-2025-04-14", error="server_error: Boom", response_id="r",
                                 finish_reasons=["failed"])


def test_responses_incomplete_is_not_an_error() -> None:
    result = run_stream(openai, "/v1/responses", [load("openai_responses_stream_incomplete.sse")])
    assert result.usage == Usage(input_tokens=21, output_tokens=16)
    assert result.error is None


@pytest.mark.parametrize(
    "event",
    [
        # Current shape: code and message at the top level of the event.
        b'event: error\ndata: {"type":"error","code":"server_error","message":"Boom","param":null,'
        b'"sequence_number":2}\n\n',
        # Earlier shape, also without the `event:` line that some relays drop.
        b'data: {"type":"error","sequence_number":2,"error":{"code":"server_error","message":"Boom",'
        b'"param":null}}\n\n',
    ],
)
def test_responses_error_event(event: bytes) -> None:
    created = load("openai_responses_stream_failed.sse").split(b"\n\n")[0] + b"\n\n"
    result = run_stream(openai, "/v1/responses", [created, event])
    assert result.usage is None
    assert result.model == "gpt-4.1-2025-04-14"
    assert result.error == "server_error: Boom"


def test_stored_objects_are_not_billed_again() -> None:
    # Retrieving a response (or a stored chat completion) returns its usage a second time.
    body = load("openai_responses.json")
    for path in ("/v1/responses/resp_0b7f3c1e9d2a", "/v1/responses/resp_0b7f3c1e9d2a/cancel"):
        result = openai.parse_response(path, body)
        assert result.usage is None
        assert result.model == "o3-2025-04-16"
    replay = run_stream(openai, "/v1/responses/resp_0b7f3c1e9d2a", [load("openai_responses_stream.sse")])
    assert replay.usage is None
    assert openai.parse_response("/v1/chat/completions/chatcmpl-1", load("openai_chat.json")).usage is None
    compact = b'{"id":"cmp_1","object":"response.compaction","usage":{"input_tokens":50,"output_tokens":9}}'
    assert openai.parse_response("/v1/responses/compact", compact).usage == Usage(50, 9)


def test_error_body() -> None:
    body = (
        b'{"error": {"message": "Incorrect API key provided", "type": "invalid_request_error", '
        b'"param": null, "code": "invalid_api_key"}}'
    )
    result = openai.parse_response("/v1/chat/completions", body)
    assert result == UsageResult(error="invalid_request_error: Incorrect API key provided")
    # A streaming request answered with a plain JSON error goes through the stream parser too.
    streamed = run_stream(openai, "/v1/chat/completions", [body[:20], body[20:]], RequestInfo(model="m"))
    assert streamed.error == result.error
    assert streamed.usage is None


def test_buffered_sse_body_given_to_parse_response() -> None:
    result = openai.parse_response("/v1/chat/completions", load("openai_chat_stream.sse"))
    assert result.usage == CHAT_USAGE


def test_cache_writes_are_cache_creation_tokens() -> None:
    usage = {
        "prompt_tokens": 3000,
        "completion_tokens": 10,
        "total_tokens": 3010,
        "prompt_tokens_details": {"cached_tokens": 1000, "cache_write_tokens": 1500},
    }
    assert usage_from_openai(usage) == Usage(3000, 10, cached_tokens=1000, cache_creation_tokens=1500)


def test_reasoning_left_out_of_completion_tokens_is_added() -> None:
    # Some OpenAI-compatible servers report thinking beside completion_tokens, not inside it.
    usage = {
        "prompt_tokens": 21,
        "completion_tokens": 7,
        "total_tokens": 88,
        "completion_tokens_details": {"reasoning_tokens": 60},
    }
    assert usage_from_openai(usage) == Usage(input_tokens=21, output_tokens=67, reasoning_tokens=60)
    # ...while OpenAI's own (reasoning included) is taken as is.
    usage["total_tokens"] = 28
    assert usage_from_openai(usage) == Usage(input_tokens=21, output_tokens=7, reasoning_tokens=60)


def test_gemini_openai_compatible_endpoint() -> None:
    gemini = OpenAIProvider(name="gemini")
    assert gemini.name == "gemini"
    body = {
        "id": "x",
        "object": "chat.completion",
        "model": "models/gemini-2.5-flash",
        "choices": [],
        "usage": {"prompt_tokens": 12, "completion_tokens": 30, "total_tokens": 42},
    }
    for path in ("/v1/chat/completions", "/v1beta/openai/chat/completions"):
        result = gemini.parse_response(path, orjson.dumps(body))
        assert result.usage == Usage(12, 30)
        assert result.model == "gemini-2.5-flash"
        assert "openai" not in repr(result)
    stream = load("openai_chat_stream.sse")
    assert run_stream(gemini, "/v1beta/openai/chat/completions", [stream]) == run_stream(
        openai, "/v1/chat/completions", [stream]
    )


def test_handles_path() -> None:
    for path in (
        "/v1/chat/completions",
        "/v1/completions",
        "/v1/embeddings",
        "/v1/responses",
        "/v1/responses/resp_123",
        "/v1/responses/resp_123/input_items",
        "/v1/responses?x=1",
    ):
        assert openai.handles_path(path), path
    for path in ("/v1/messages", "/v1/models", "/v1beta/models/x:generateContent", "/v1/responsesx", "/"):
        assert not openai.handles_path(path), path


def test_credential() -> None:
    assert openai.credential({"authorization": "Bearer sk-abc"}, {}) == "sk-abc"
    assert openai.credential({"authorization": "bearer  sk-abc "}, {}) == "sk-abc"
    assert openai.credential({"authorization": "Basic dXNlcg=="}, {}) is None
    assert openai.credential({"authorization": "Bearer "}, {}) is None
    assert openai.credential({}, {"key": "k"}) is None


def test_request_info() -> None:
    body = b'{"model":"gpt-4o","stream":true,"stream_options":{"include_usage":true},"messages":[]}'
    assert openai.request_info("/v1/chat/completions", body) == RequestInfo(model="gpt-4o", stream=True)
    assert openai.request_info("/v1/responses", b'{"model":"o3"}') == RequestInfo(model="o3")
    assert openai.request_info("/v1/chat/completions", b'{"model":5,"stream":"true"}') == RequestInfo()
    for bad in (b"", b"{", b"[]", b"null", b"\xff", b"model=gpt-4o"):
        assert openai.request_info("/v1/chat/completions", bad) == RequestInfo()


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"{",
        b"null",
        b"[]",
        b"\xff\xfe\x00",
        b'{"usage": "lots"}',
        b'{"usage": {"prompt_tokens": "12", "completion_tokens": null}}',
        b'{"usage": {"prompt_tokens_details": [], "completion_tokens_details": 3}}',
        b'{"model": ["x"], "error": 7, "response": "y"}',
        b'{"type": "error"}',
        b"data: {\n\n",
    ],
)
def test_bad_json_never_raises(body: bytes) -> None:
    result = openai.parse_response("/v1/chat/completions", body)
    assert isinstance(result, UsageResult)
    assert result.usage is None or isinstance(result.usage, Usage)
    assert isinstance(run_stream(openai, "/v1/chat/completions", [body]), UsageResult)


@pytest.mark.parametrize(("path", "stream"), STREAMS)
def test_damaged_streams_never_raise(path: str, stream: str, rng: random.Random) -> None:
    for body in mutations(load(stream), rng):
        assert isinstance(run_stream(openai, path, [body]), UsageResult)


def test_answer_id_and_finish_reasons_for_traces() -> None:
    """gen_ai.response.id and gen_ai.response.finish_reasons: from the body, or from the stream's
    chunk that says why it ended (before the usage-only chunk)."""
    body = (b'{"id":"chatcmpl-9","object":"chat.completion","model":"gpt-4o","choices":[{"index":0,'
            b'"finish_reason":"stop"},{"index":1,"finish_reason":"length"}],"usage":{"prompt_tokens":1,'
            b'"completion_tokens":1,"total_tokens":2}}')
    result = openai.parse_response("/v1/chat/completions", body)
    assert (result.response_id, result.finish_reasons) == ("chatcmpl-9", ["stop", "length"])
    stream = [
        b'data: {"id":"chatcmpl-s","model":"gpt-4o","choices":[{"index":0,"delta":{},"finish_reason":null}]}\n\n',
        b'data: {"id":"chatcmpl-s","model":"gpt-4o","choices":[{"index":0,"delta":{},'
        b'"finish_reason":"tool_calls"}]}\n\n',
        b'data: {"id":"chatcmpl-s","model":"gpt-4o","choices":[],"usage":{"prompt_tokens":1,"completion_tokens":1,'
        b'"total_tokens":2}}\n\n',
        b"data: [DONE]\n\n",
    ]
    result = run_stream(openai, "/v1/chat/completions", stream)
    assert (result.response_id, result.finish_reasons) == ("chatcmpl-s", ["tool_calls"])
    incomplete = run_stream(openai, "/v1/responses", [load("openai_responses_stream_incomplete.sse")])
    assert incomplete.finish_reasons == ["max_output_tokens"] and incomplete.response_id
