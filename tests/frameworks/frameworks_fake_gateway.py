"""A tiny stand-in for the Majordomo Gateway: answers OpenAI chat completions and Anthropic messages
(plain JSON, or server-sent events when the request has ``"stream": true``) and records every request
(method, path, query, headers, JSON body).

It runs an aiohttp server on 127.0.0.1 in a background thread with its own event loop, so synchronous
clients (agno's ``Agent.run``) and asynchronous ones (pydantic-ai, ``asyncio.run``) can both call it.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from aiohttp import web

REPLY_TEXT = "Hello from the fake gateway."


@dataclass(frozen=True, slots=True)
class RecordedRequest:
    """One request as the fake server saw it."""

    method: str
    path: str
    query: Mapping[str, str]
    headers: Mapping[str, str]
    """Header names lower-cased; a repeated header keeps its values joined with ', '."""
    header_counts: Mapping[str, int]
    """How many times each (lower-cased) header name was sent."""
    body: Mapping[str, Any]

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())

    def header_count(self, name: str) -> int:
        """How many times the header was sent (more than once would be a header-merging bug)."""
        return self.header_counts.get(name.lower(), 0)

    def majordomo_headers(self) -> dict[str, str]:
        return {name: value for name, value in self.headers.items() if name.startswith("x-majordomo-")}


def _openai_chat_completion(model: str) -> dict[str, Any]:
    return {
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": REPLY_TEXT},
                "finish_reason": "stop",
                "logprobs": None,
            }
        ],
        "usage": {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18},
    }


def _anthropic_message(model: str) -> dict[str, Any]:
    return {
        "id": "msg_fake",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [{"type": "text", "text": REPLY_TEXT}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {"input_tokens": 11, "output_tokens": 7},
    }


def _openai_chunks(model: str, include_usage: bool) -> list[dict[str, Any]]:
    base = {
        "id": "chatcmpl-fake",
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
    }
    chunks: list[dict[str, Any]] = [
        {
            **base,
            "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}],
        },
        {**base, "choices": [{"index": 0, "delta": {"content": REPLY_TEXT}, "finish_reason": None}]},
        {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
    ]
    if include_usage:
        usage = {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18}
        chunks.append({**base, "choices": [], "usage": usage})
    return chunks


def _anthropic_events(model: str) -> list[tuple[str, dict[str, Any]]]:
    message = {**_anthropic_message(model), "content": [], "stop_reason": None}
    message["usage"] = {"input_tokens": 11, "output_tokens": 1}
    return [
        ("message_start", {"type": "message_start", "message": message}),
        (
            "content_block_start",
            {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        ),
        (
            "content_block_delta",
            {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": REPLY_TEXT}},
        ),
        ("content_block_stop", {"type": "content_block_stop", "index": 0}),
        (
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                "usage": {"output_tokens": 7},
            },
        ),
        ("message_stop", {"type": "message_stop"}),
    ]


async def _send_events(request: web.Request, events: list[tuple[str | None, Any]]) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
    await response.prepare(request)
    for event, data in events:
        payload = data if isinstance(data, str) else json.dumps(data)
        prefix = f"event: {event}\n" if event else ""
        await response.write(f"{prefix}data: {payload}\n\n".encode())
    await response.write_eof()
    return response


class FakeGateway:
    """Call :meth:`start`, read :meth:`last` or :meth:`snapshot`, :meth:`clear`, then :meth:`stop`."""

    def __init__(self) -> None:
        self.requests: list[RecordedRequest] = []
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self.port: int = 0

    @property
    def url(self) -> str:
        """Base URL, as ``MAJORDOMO_GATEWAY_URL`` would hold it (no path, no trailing slash)."""
        return f"http://127.0.0.1:{self.port}"

    def clear(self) -> None:
        with self._lock:
            self.requests.clear()

    def snapshot(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self.requests)

    def last(self) -> RecordedRequest:
        with self._lock:
            if not self.requests:
                raise AssertionError("the fake gateway received no request")
            return self.requests[-1]

    async def _record(self, request: web.Request) -> RecordedRequest:
        try:
            body = await request.json()
        except ValueError:
            body = {}
        counts: dict[str, int] = {}
        headers: dict[str, str] = {}
        for name, value in request.headers.items():
            key = name.lower()
            counts[key] = counts.get(key, 0) + 1
            headers[key] = f"{headers[key]}, {value}" if key in headers else value
        recorded = RecordedRequest(
            method=request.method,
            path=request.path,
            query=dict(request.query),
            headers=headers,
            header_counts=counts,
            body=body if isinstance(body, dict) else {},
        )
        with self._lock:
            self.requests.append(recorded)
        return recorded

    async def _chat_completions(self, request: web.Request) -> web.StreamResponse:
        recorded = await self._record(request)
        model = str(recorded.body.get("model", "unknown"))
        if not recorded.body.get("stream"):
            return web.json_response(_openai_chat_completion(model))
        stream_options = recorded.body.get("stream_options") or {}
        chunks = _openai_chunks(model, include_usage=bool(stream_options.get("include_usage")))
        return await _send_events(request, [*((None, chunk) for chunk in chunks), (None, "[DONE]")])

    async def _messages(self, request: web.Request) -> web.StreamResponse:
        recorded = await self._record(request)
        model = str(recorded.body.get("model", "unknown"))
        if not recorded.body.get("stream"):
            return web.json_response(_anthropic_message(model))
        return await _send_events(request, list(_anthropic_events(model)))

    async def _not_found(self, request: web.Request) -> web.Response:
        await self._record(request)
        return web.json_response({"error": {"message": f"no route for {request.path}"}}, status=404)

    async def _serve(self, ready: threading.Event) -> None:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._chat_completions)
        app.router.add_post("/v1/messages", self._messages)
        app.router.add_route("*", "/{tail:.*}", self._not_found)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        server = site._server  # aiohttp exposes the bound port only through the asyncio server
        assert server is not None and server.sockets
        self.port = server.sockets[0].getsockname()[1]
        ready.set()

    def start(self) -> FakeGateway:
        ready = threading.Event()
        loop = asyncio.new_event_loop()
        self._loop = loop

        def run() -> None:
            asyncio.set_event_loop(loop)
            loop.run_until_complete(self._serve(ready))
            loop.run_forever()

        self._thread = threading.Thread(target=run, name="fake-gateway", daemon=True)
        self._thread.start()
        if not ready.wait(timeout=10):
            raise RuntimeError("fake gateway did not start within 10 seconds")
        return self

    def stop(self) -> None:
        loop, thread, runner = self._loop, self._thread, self._runner
        if loop is None or thread is None:
            return
        if runner is not None:
            asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(timeout=10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()
        self._loop = self._thread = self._runner = None
