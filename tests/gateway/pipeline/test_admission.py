"""Admission control (proxy.max_in_flight) and the spool failure policy, in-process: a refused
request gets an immediate 503 with Retry-After, in its provider's error shape, and a row; a
request already being served is never cut."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from majordomo_gateway.proxy.upstream import Origin

CHAT = b'{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}],"stream":true}'
MESSAGE = b'{"model":"claude-3-5-haiku-latest","max_tokens":5,"messages":[{"role":"user","content":"hi"}]}'
EVENTS = [b'data: {"id":"c","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":"Hi"}}]}\n\n',
          b'data: {"id":"c","object":"chat.completion.chunk","choices":[],'
          b'"usage":{"prompt_tokens":3,"completion_tokens":1,"total_tokens":4}}\n\n',
          b"data: [DONE]\n\n"]


class HeldUpstream:
    """The in-memory upstream, but each request waits for ``gate`` before it is answered."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.gate = asyncio.Event()
        self.waiting = 0

    async def request(self, origin: Origin, method: str, target: bytes, headers: list[tuple[str, str]],
                      body: bytes) -> Any:
        self.waiting += 1
        await self.gate.wait()
        return await self.inner.request(origin, method, target, headers, body)

    async def close(self) -> None:
        pass


async def _until(condition: Any) -> None:
    for _ in range(200):
        if condition():
            return
        await asyncio.sleep(0.005)
    raise AssertionError("condition not reached")


async def test_over_max_in_flight_is_an_immediate_503_with_a_row_and_the_stream_in_flight_finishes(
        in_process: Any, canned: Any) -> None:
    proxy = in_process.gateway.proxy
    proxy.max_in_flight = 1
    held = HeldUpstream(in_process.upstream)
    proxy.upstream = held
    in_process.upstream.answers += [canned.sse(EVENTS), canned.json(b'{"id":"x","choices":[]}')]
    first = asyncio.ensure_future(in_process.post("/v1/chat/completions", CHAT))
    await _until(lambda: held.waiting == 1)

    refused = await in_process.post("/v1/chat/completions", CHAT)
    assert refused.status == 503 and refused.headers[b"retry-after"] == b"1"
    error = orjson.loads(refused.body)["error"]  # OpenAI's shape: the SDK raises InternalServerError
    assert error["code"] == "overloaded" and "proxy.max_in_flight" in error["message"]
    anthropic = await in_process.post("/v1/messages", MESSAGE, (b"x-api-key", b"sk-ant-test"))
    body = orjson.loads(anthropic.body)
    assert anthropic.status == 503 and body["type"] == "error" and body["error"]["type"] == "overloaded_error"
    assert held.waiting == 1, "a refused request must not reach the upstream"

    held.gate.set()
    served = await first
    # Whole, to its [DONE] (the usage chunk the gateway asked for is hidden from the client).
    assert served.status == 200 and served.complete and served.body == EVENTS[0] + EVENTS[2]
    assert proxy.in_flight == 0
    after = await in_process.post("/v1/chat/completions", CHAT.replace(b',"stream":true', b""))
    assert after.status == 200, after.body

    row = await in_process.row(refused.headers[b"x-majordomo-request-id"])
    assert row["status_code"] == 503 and row["error_message"].startswith("overloaded")
    assert row["majordomo_api_key_id"] == in_process.key_id and row["provider"] == "openai"
    assert (await in_process.row(anthropic.headers[b"x-majordomo-request-id"]))["provider"] == "anthropic"
    assert (await in_process.row(served.headers[b"x-majordomo-request-id"]))["status_code"] == 200


async def test_refusing_writer_turns_requests_away_with_a_row(in_process: Any) -> None:
    writer = in_process.gateway.writer
    # What the writer sets while neither the database nor the spool takes rows.  Its next cycle
    # recomputes the flag, maybe during this request's key lookup: the reason is fixed at admission.
    writer.refusing = True
    reply = await in_process.post("/v1/chat/completions", CHAT)
    writer.refusing = False
    assert reply.status == 503 and reply.headers[b"retry-after"] == b"5"
    assert orjson.loads(reply.body)["error"]["code"] == "not_recorded"
    assert not in_process.upstream.requests
    row = await in_process.row(reply.headers[b"x-majordomo-request-id"])
    assert row["status_code"] == 503 and "spool not writable" in row["error_message"]


async def test_refused_without_a_valid_key_is_still_401(in_process: Any) -> None:
    in_process.gateway.proxy.max_in_flight = 1
    in_process.gateway.proxy.in_flight = 1
    try:
        reply = await in_process.post("/v1/chat/completions", CHAT, key=False)
    finally:
        in_process.gateway.proxy.in_flight = 0
    assert reply.status == 401 and in_process.row_count() == 0
