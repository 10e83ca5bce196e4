"""The whole pipeline, in-process: ASGI calls against an in-memory upstream, rows in SQLite."""

from __future__ import annotations

from typing import Any

import orjson
from majordomo_gateway.proxy.upstream import UpstreamConnectError, UpstreamTimeout

CHAT = b'{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}'
ANSWER = (b'{"id":"chatcmpl-1","object":"chat.completion","model":"gpt-4o-mini-2024-07-18",'
          b'"choices":[{"index":0,"message":{"role":"assistant","content":"Hello"},"finish_reason":"stop"}],'
          b'"usage":{"prompt_tokens":10,"completion_tokens":5,"total_tokens":15}}')


def _chunk(**fields: Any) -> bytes:
    base = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "model": "gpt-4o-mini-2024-07-18"}
    return b"data: " + orjson.dumps(base | fields) + b"\n\n"


STREAM_EVENTS = [
    _chunk(choices=[{"index": 0, "delta": {"role": "assistant", "content": "Hel"}, "finish_reason": None}],
           usage=None),
    _chunk(choices=[{"index": 0, "delta": {"content": "lo"}, "finish_reason": "stop"}], usage=None),
    _chunk(choices=[], usage={"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}),
    b"data: [DONE]\n\n",
]


async def test_json_answer_relayed_byte_for_byte_and_priced(in_process: Any, canned: Any) -> None:
    in_process.upstream.answers.append(canned.json(ANSWER))
    reply = await in_process.post("/v1/chat/completions", CHAT)
    assert reply.status == 200 and reply.complete
    assert reply.body == ANSWER
    sent = in_process.upstream.requests[0]
    assert sent.method == "POST" and sent.target.endswith(b"/chat/completions") and sent.body == CHAT
    assert not any(name.lower() == "x-majordomo-key" for name, _ in sent.headers)
    row = await in_process.row(reply.headers[b"x-majordomo-request-id"])
    assert row["status_code"] == 200 and row["provider"] == "openai" and row["route"] == "openai"
    assert row["majordomo_api_key_id"] == in_process.key_id
    assert (row["input_tokens"], row["output_tokens"], row["usage_source"]) == (10, 5, "reported")
    assert row["model"] == "gpt-4o-mini-2024-07-18"
    assert row["total_cost"] is not None and float(row["total_cost"]) > 0


async def test_sse_stream_relayed_and_metered(in_process: Any, canned: Any) -> None:
    in_process.upstream.answers.append(canned.sse(STREAM_EVENTS))
    body = b'{"model":"gpt-4o-mini","stream":true,"stream_options":{"include_usage":true},"messages":[]}'
    reply = await in_process.post("/v1/chat/completions", body)
    assert reply.status == 200 and reply.complete
    assert reply.body == b"".join(STREAM_EVENTS)
    row = await in_process.row(reply.headers[b"x-majordomo-request-id"])
    assert row["streamed"] and (row["input_tokens"], row["output_tokens"]) == (10, 5)
    assert row["usage_source"] == "reported" and row["time_to_first_token_ms"] is not None


async def test_injected_stream_usage_is_metered_and_hidden(in_process: Any, canned: Any) -> None:
    in_process.upstream.answers.append(canned.sse(STREAM_EVENTS))
    reply = await in_process.post("/v1/chat/completions", b'{"model":"gpt-4o-mini","stream":true,"messages":[]}')
    assert b'"include_usage":true' in in_process.upstream.requests[0].body
    assert reply.status == 200 and reply.complete
    assert b'"prompt_tokens"' not in reply.body and reply.body.endswith(b"data: [DONE]\n\n")
    row = await in_process.row(reply.headers[b"x-majordomo-request-id"])
    assert (row["input_tokens"], row["output_tokens"], row["usage_source"]) == (10, 5, "reported")


async def test_upstream_error_status_relayed_and_recorded(in_process: Any, canned: Any) -> None:
    error = b'{"error":{"message":"Rate limit reached","type":"requests","code":"rate_limit_exceeded"}}'
    in_process.upstream.answers.append(canned.json(error, status=429))
    reply = await in_process.post("/v1/chat/completions", CHAT)
    assert reply.status == 429 and reply.body == error
    row = await in_process.row(reply.headers[b"x-majordomo-request-id"])
    assert row["status_code"] == 429 and "Rate limit reached" in row["error_message"]
    assert row["usage_source"] == "none" and row["total_cost"] is None


async def test_missing_key_is_401_without_upstream_call_or_row(in_process: Any) -> None:
    reply = await in_process.post("/v1/chat/completions", CHAT, key=False)
    assert reply.status == 401
    assert orjson.loads(reply.body)["error"]["code"] == "missing_majordomo_key"
    assert in_process.upstream.requests == []
    assert b"x-majordomo-request-id" not in reply.headers
    assert in_process.row_count() == 0


async def test_upstream_timeout_is_504_and_recorded(in_process: Any) -> None:
    in_process.upstream.answers.append(UpstreamTimeout("read timed out"))
    reply = await in_process.post("/v1/chat/completions", CHAT)
    assert reply.status == 504
    error = orjson.loads(reply.body)["error"]
    assert (error["code"], error["provider"]) == ("upstream_timeout", "openai")
    row = await in_process.row(reply.headers[b"x-majordomo-request-id"])
    assert row["status_code"] == 504 and row["error_message"] == "openai upstream timed out"


async def test_unreachable_upstream_is_502_and_recorded(in_process: Any) -> None:
    in_process.upstream.answers.append(UpstreamConnectError("connection refused"))
    reply = await in_process.post("/v1/chat/completions", CHAT)
    assert reply.status == 502 and orjson.loads(reply.body)["error"]["code"] == "upstream_unreachable"
    row = await in_process.row(reply.headers[b"x-majordomo-request-id"])
    assert row["status_code"] == 502 and row["error_message"].startswith("openai upstream unreachable")


async def test_broken_stream_is_dropped_not_ended(in_process: Any, canned: Any) -> None:
    answer = canned.sse(STREAM_EVENTS[:1])
    answer.broken = True
    in_process.upstream.answers.append(answer)
    reply = await in_process.post("/v1/chat/completions",
                                  b'{"model":"gpt-4o-mini","stream":true,"stream_options":{"include_usage":true}}')
    assert reply.status == 200 and not reply.complete
    assert reply.body == STREAM_EVENTS[0]
    row = await in_process.row(reply.headers[b"x-majordomo-request-id"])
    assert row["error_message"].startswith("upstream stream broken")


async def test_broken_whole_body_is_a_clean_502(in_process: Any, canned: Any) -> None:
    answer = canned.json(ANSWER)
    answer.chunks = [ANSWER[:20]]
    answer.broken = True
    in_process.upstream.answers.append(answer)
    reply = await in_process.post("/v1/chat/completions", CHAT)
    assert reply.status == 502 and orjson.loads(reply.body)["error"]["code"] == "upstream_broken"
    row = await in_process.row(reply.headers[b"x-majordomo-request-id"])
    assert row["status_code"] == 502 and row["error_message"].startswith("upstream response broken")


async def test_health_needs_no_key(in_process: Any, call: Any) -> None:
    reply = await call(in_process.gateway, "GET", "/health", [])
    assert (reply.status, reply.body) == (200, b"ok")
