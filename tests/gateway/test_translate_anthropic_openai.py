"""The anthropic-openai translation on its own: request mapping, response mapping, chunking."""

from __future__ import annotations

import random

import orjson
import pytest
from majordomo_gateway.providers.registry import PROVIDERS
from majordomo_gateway.proxy.adapter import AdapterError
from majordomo_gateway.proxy.translate.anthropic_openai import (
    DEFAULT_MAX_TOKENS,
    AnthropicOpenAIAdapter,
    to_anthropic_request,
    to_openai_completion,
)

ADAPTER = AnthropicOpenAIAdapter()
ANTHROPIC = PROVIDERS["anthropic"]


def adapt(body: dict, headers: list[tuple[str, str]] | None = None, path: str = "/v1/chat/completions"):
    return ADAPTER.adapt(ANTHROPIC, path, orjson.dumps(body), headers or [])


def test_conversation_with_tools_maps_turn_by_turn() -> None:
    request = {
        "model": "claude-x",
        "messages": [
            {"role": "system", "content": [{"type": "text", "text": "Sys", "cache_control": {"type": "ephemeral"}}]},
            {"role": "user", "content": "Weather in Paris and Rome?"},
            {"role": "assistant", "content": "Checking.", "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "w", "arguments": '{"city":"Paris"}'}},
                {"id": "c2", "type": "function", "function": {"name": "w", "arguments": ""}},
            ]},
            {"role": "tool", "tool_call_id": "c1", "content": "Sunny"},
            {"role": "tool", "tool_call_id": "c2", "content": [{"type": "text", "text": "Rain"}]},
            {"role": "user", "content": "Thanks"},
        ],
        "tools": [{"type": "function", "function": {"name": "w", "parameters": {"type": "object"}}}],
        "tool_choice": "required",
        "stop": "STOP",
        "frequency_penalty": 0.5,
        "thinking": {"type": "enabled", "budget_tokens": 1024},
    }
    assert to_anthropic_request(request) == {
        "model": "claude-x",
        "max_tokens": DEFAULT_MAX_TOKENS,
        "system": [{"type": "text", "text": "Sys", "cache_control": {"type": "ephemeral"}}],
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "Weather in Paris and Rome?"}]},
            {"role": "assistant", "content": [
                {"type": "text", "text": "Checking."},
                {"type": "tool_use", "id": "c1", "name": "w", "input": {"city": "Paris"}},
                {"type": "tool_use", "id": "c2", "name": "w", "input": {}},
            ]},
            # Tool results and the next user text are one user turn, results first.
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "c1", "content": "Sunny"},
                {"type": "tool_result", "tool_use_id": "c2", "content": [{"type": "text", "text": "Rain"}]},
                {"type": "text", "text": "Thanks"},
            ]},
        ],
        "stop_sequences": ["STOP"],
        "tools": [{"name": "w", "input_schema": {"type": "object"}}],
        "tool_choice": {"type": "any"},
        "thinking": {"type": "enabled", "budget_tokens": 1024},
    }


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"n": 3}, "n must be 1"),
        ({"messages": []}, "messages must be a non-empty list"),
        ({"model": None}, "model must be"),
        ({"max_tokens": 0}, "max_tokens must be a positive integer"),
        ({"functions": [{"name": "f"}]}, "deprecated functions"),
        ({"messages": [{"role": "user", "content": [{"type": "input_audio", "input_audio": {}}]}]},
         "'input_audio' cannot be sent"),
        ({"messages": [{"role": "assistant", "content": None, "tool_calls": [
            {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{oops"}}]}]},
         "arguments is not valid JSON"),
        ({"messages": [{"role": "system", "content": "only a system prompt"}]}, "at least one user"),
        ({"tools": [{"type": "web_search"}]}, "must be a function tool"),
    ],
)
def test_requests_that_cannot_be_translated(change: dict, message: str) -> None:
    request = {"model": "claude-x", "messages": [{"role": "user", "content": "Hi"}], **change}
    with pytest.raises(AdapterError, match=message):
        to_anthropic_request(request)


def test_path_and_body_are_checked() -> None:
    with pytest.raises(AdapterError, match="serves only POST /v1/chat/completions"):
        adapt({"model": "m"}, path="/v1/embeddings")
    with pytest.raises(AdapterError, match="must be a JSON object"):
        ADAPTER.adapt(ANTHROPIC, "/v1/chat/completions", b"[1, 2]", [])


def test_headers_request_info_and_path() -> None:
    adapted = adapt(
        {"model": "claude-x", "stream": True, "stream_options": {"include_usage": True},
         "messages": [{"role": "user", "content": "Hi"}]},
        [("Authorization", "Bearer sk-ant-1"), ("OpenAI-Organization", "org"), ("Accept-Encoding", "gzip"),
         ("anthropic-beta", "b1"), ("X-Stainless-Lang", "python"), ("Content-Type", "application/json")],
    )
    assert adapted.path == b"/v1/messages"
    assert adapted.headers == [("anthropic-beta", "b1"), ("X-Stainless-Lang", "python"),
                               ("Content-Type", "application/json"), ("x-api-key", "sk-ant-1"),
                               ("anthropic-version", "2023-06-01")]
    assert (adapted.info.model, adapted.info.stream, adapted.info.include_usage) == ("claude-x", True, True)
    assert orjson.loads(adapted.body)["stream"] is True
    # A client that sends x-api-key itself keeps it.
    own_key = adapt({"model": "m", "messages": [{"role": "user", "content": "Hi"}]},
                    [("x-api-key", "k2"), ("Authorization", "Bearer other")])
    assert [h for h in own_key.headers if h[0].lower() in ("x-api-key", "authorization")] == [("x-api-key", "k2")]


MESSAGE = {
    "id": "msg_1", "type": "message", "role": "assistant", "model": "claude-x",
    "content": [
        {"type": "thinking", "thinking": "hmm", "signature": "s"},
        {"type": "text", "text": "Let me check."},
        {"type": "tool_use", "id": "toolu_1", "name": "w", "input": {"city": "Paris"}},
    ],
    "stop_reason": "tool_use",
    "usage": {"input_tokens": 10, "cache_read_input_tokens": 20, "cache_creation_input_tokens": 30,
              "output_tokens": 7},
}


def test_message_to_completion() -> None:
    assert to_openai_completion(MESSAGE, created=5, fallback_model=None) == {
        "id": "msg_1", "object": "chat.completion", "created": 5, "model": "claude-x",
        "choices": [{"index": 0, "logprobs": None, "finish_reason": "tool_calls", "message": {
            "role": "assistant", "content": "Let me check.", "refusal": None,
            "tool_calls": [{"id": "toolu_1", "type": "function",
                            "function": {"name": "w", "arguments": '{"city":"Paris"}'}}]}}],
        "usage": {"prompt_tokens": 60, "completion_tokens": 7, "total_tokens": 67,
                  "prompt_tokens_details": {"cached_tokens": 20, "cache_write_tokens": 30},
                  "completion_tokens_details": {"reasoning_tokens": 0}},
    }
    for stop_reason, finish in (("end_turn", "stop"), ("max_tokens", "length"), ("refusal", "content_filter")):
        completion = to_openai_completion({**MESSAGE, "stop_reason": stop_reason}, created=0, fallback_model=None)
        assert completion["choices"][0]["finish_reason"] == finish


def test_error_bodies_become_openai_errors() -> None:
    transform = adapt({"model": "m", "messages": [{"role": "user", "content": "Hi"}]}).response(
        400, "application/json")
    body = b'{"type":"error","error":{"type":"invalid_request_error","message":"max_tokens: too big"}}'
    assert transform.feed(body[:10]) == b"" and transform.feed(body[10:]) == b""
    assert orjson.loads(transform.finish()) == {"error": {"message": "max_tokens: too big",
                                                          "type": "invalid_request_error", "param": None,
                                                          "code": None}}


STREAM = b"".join(
    f"event: {name}\ndata: {orjson.dumps(data).decode()}\n\n".encode()
    for name, data in [
        ("message_start", {"type": "message_start", "message": {
            "id": "msg_1", "model": "claude-x", "usage": {"input_tokens": 10, "cache_read_input_tokens": 5,
                                                          "output_tokens": 1}}}),
        ("content_block_start", {"type": "content_block_start", "index": 0,
                                 "content_block": {"type": "thinking", "thinking": ""}}),
        ("ping", {"type": "ping"}),
        ("content_block_delta", {"type": "content_block_delta", "index": 0,
                                 "delta": {"type": "thinking_delta", "thinking": "hmm"}}),
        ("content_block_stop", {"type": "content_block_stop", "index": 0}),
        ("content_block_start", {"type": "content_block_start", "index": 1,
                                 "content_block": {"type": "text", "text": ""}}),
        ("content_block_delta", {"type": "content_block_delta", "index": 1,
                                 "delta": {"type": "text_delta", "text": "Hé, "}}),
        ("content_block_delta", {"type": "content_block_delta", "index": 1,
                                 "delta": {"type": "text_delta", "text": "look"}}),
        ("content_block_start", {"type": "content_block_start", "index": 2, "content_block": {
            "type": "tool_use", "id": "toolu_1", "name": "w", "input": {}}}),
        ("content_block_delta", {"type": "content_block_delta", "index": 2,
                                 "delta": {"type": "input_json_delta", "partial_json": ""}}),
        ("content_block_delta", {"type": "content_block_delta", "index": 2,
                                 "delta": {"type": "input_json_delta", "partial_json": '{"city":'}}),
        ("content_block_delta", {"type": "content_block_delta", "index": 2,
                                 "delta": {"type": "input_json_delta", "partial_json": '"Paris"}'}}),
        ("message_delta", {"type": "message_delta", "delta": {"stop_reason": "tool_use"},
                           "usage": {"output_tokens": 42}}),
        ("message_stop", {"type": "message_stop"}),
    ]
)


def translate(chunks: list[bytes], include_usage: bool) -> list[dict | str]:
    body = {"model": "m", "stream": True, "messages": [{"role": "user", "content": "Hi"}]}
    if include_usage:
        body["stream_options"] = {"include_usage": True}
    transform = adapt(body).response(200, "text/event-stream; charset=utf-8")
    out = b"".join(transform.feed(chunk) for chunk in chunks) + transform.finish()
    events = [event.removeprefix(b"data: ") for event in out.split(b"\n\n") if event]
    return [event.decode() if event == b"[DONE]" else orjson.loads(event) for event in events]


@pytest.mark.parametrize("include_usage", [True, False])
def test_stream_translation(include_usage: bool) -> None:
    events = translate([STREAM], include_usage)
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    deltas = [c["choices"][0]["delta"] for c in chunks if c["choices"]]
    assert deltas == [
        {"role": "assistant", "content": ""},
        {"content": "Hé, "},
        {"content": "look"},
        {"tool_calls": [{"index": 0, "id": "toolu_1", "type": "function", "function": {"name": "w", "arguments": ""}}]},
        {"tool_calls": [{"index": 0, "function": {"arguments": '{"city":'}}]},
        {"tool_calls": [{"index": 0, "function": {"arguments": '"Paris"}'}}]},
        {},
    ]
    assert chunks[len(deltas) - 1]["choices"][0]["finish_reason"] == "tool_calls"
    assert {c["id"] for c in chunks} == {"msg_1"} and {c["model"] for c in chunks} == {"claude-x"}
    if include_usage:
        assert chunks[-1]["choices"] == []
        assert chunks[-1]["usage"]["prompt_tokens"] == 15
        assert chunks[-1]["usage"]["completion_tokens"] == 42
        assert all(c["usage"] is None for c in chunks[:-1])
    else:
        assert all("usage" not in c for c in chunks)


def test_stream_translation_does_not_depend_on_chunking() -> None:
    whole = translate([STREAM], True)
    byte_by_byte = translate([STREAM[i:i + 1] for i in range(len(STREAM))], True)
    assert [c if isinstance(c, str) else {**c, "created": 0} for c in byte_by_byte] == \
        [c if isinstance(c, str) else {**c, "created": 0} for c in whole]


# Values a broken or hostile upstream may put anywhere: none may stop the translation mid-answer.
ODD_VALUES = [None, [], {}, [1, "x"], {"a": [None]}, True, -1, 1e300, 2**63, 2**64 - 1, -(2**63), 2.5, "", "x" * 300,
              "\u0000", 0]


def _odd_stream(rng: random.Random) -> bytes:
    """STREAM with one value (or a whole field) somewhere replaced by an odd one."""
    events = []
    for block in STREAM.split(b"\n\n"):
        if not block:
            continue
        name, data = block.split(b"\n", 1)
        obj = orjson.loads(data.removeprefix(b"data: "))
        if rng.random() < 0.5:
            target = obj
            while True:
                key = rng.choice(list(target))
                if isinstance(target[key], dict) and target[key] and rng.random() < 0.6:
                    target = target[key]
                    continue
                target[key] = rng.choice(ODD_VALUES)
                break
        events.append(name + b"\ndata: " + orjson.dumps(obj) + b"\n\n")
    return b"".join(events)


def test_odd_values_never_stop_the_translation() -> None:
    rng = random.Random(20261204)
    for _ in range(400):
        stream = _odd_stream(rng)
        for include_usage in (True, False):
            translate([stream], include_usage)  # every event out is JSON (or [DONE]): translate parses them
        message = orjson.loads(stream.split(b"\n\n")[0].split(b"data: ", 1)[1]).get("message")
        if isinstance(message, dict):
            to_openai_completion({**message, "content": rng.choice(ODD_VALUES),
                                  "stop_reason": rng.choice(ODD_VALUES)}, created=0, fallback_model="m")


def test_stop_reason_and_counts_that_are_not_ones() -> None:
    completion = to_openai_completion(
        {"id": "msg_1", "model": "m", "content": [{"type": "text", "text": "Hi"}], "stop_reason": [],
         "usage": {"input_tokens": 10, "output_tokens": 1e300}}, created=0, fallback_model=None)
    assert completion["choices"][0]["finish_reason"] == "stop"
    assert "usage" not in completion  # not counts the gateway can vouch for
    odd = STREAM.replace(b'"stop_reason":"tool_use"', b'"stop_reason":[]').replace(
        b'"output_tokens":42', b'"output_tokens":1e300')
    assert odd != STREAM
    events = translate([odd], True)
    assert events[-1] == "[DONE]"
    reasons = [c["choices"][0]["finish_reason"] for c in events[:-1] if c["choices"]]
    assert [reason for reason in reasons if reason] == ["stop"]
    assert all(c["choices"] for c in events[:-1])  # no usage chunk for usage that is not usage
