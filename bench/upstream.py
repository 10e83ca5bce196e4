"""Fast mock LLM upstream for the gateway benchmark: raw asyncio Protocol + httptools on uvloop.

nginx serves the non-streaming answers in the main runs (it cannot pace events); this serves the
streams, one write per event, ``gap`` ms apart (default 1 ms), so every event reaches the gateway
as its own TCP read and has to be relayed as it arrives.

Routes (POST; the body is read, and ``"stream":true`` in it selects the streamed answer):
  /v1/chat/completions     OpenAI chat.completion, or 20 chunks + usage chunk + [DONE]
  /v1/messages             Anthropic message, or message_start, 20 deltas, message_delta, message_stop
  GET /__stats             JSON counters: requests, streams started/completed/cut

Query parameters (forwarded by the gateway like any query string):
  gap_ms=F                 pause between events (default --gap-ms)
  first_ms=F               pause before the first event (default: gap_ms)

Usage: python upstream.py PORT [--gap-ms 1] [--repeat K]

``--repeat K`` sends every content event of a stream K times (about 18 x K + 3 events): streams
as long as a real model's answer, where a request costs the gateway many events, not one head.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from urllib.parse import parse_qsl

import httptools
import uvloop

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import canned


def _head(content_type: bytes, headers: list[tuple[str, str]], length: int | None) -> bytes:
    lines = [b"HTTP/1.1 200 OK", b"content-type: " + content_type]
    lines += [f"{k}: {v}".encode() for k, v in headers]
    lines.append(b"transfer-encoding: chunked" if length is None else b"content-length: %d" % length)
    return b"\r\n".join(lines) + b"\r\n\r\n"


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


END = b"0\r\n\r\n"
SSE = b"text/event-stream; charset=utf-8"
ROUTES = {
    b"/v1/chat/completions": (
        _head(b"application/json", canned.OPENAI_RESPONSE_HEADERS, len(canned.OPENAI_JSON_BODY))
        + canned.OPENAI_JSON_BODY,
        _head(SSE, [("cache-control", "no-cache"), *canned.OPENAI_RESPONSE_HEADERS], None),
        [_chunk(e) for e in canned.openai_stream_events()],
    ),
    b"/v1/messages": (
        _head(b"application/json", canned.ANTHROPIC_RESPONSE_HEADERS, len(canned.ANTHROPIC_JSON_BODY))
        + canned.ANTHROPIC_JSON_BODY,
        _head(SSE, [("cache-control", "no-cache"), *canned.ANTHROPIC_RESPONSE_HEADERS], None),
        [_chunk(e) for e in canned.anthropic_stream_events()],
    ),
}
NOT_FOUND = b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n"
STATS = {"requests": 0, "streams_started": 0, "streams_completed": 0, "streams_cut": 0}
GAP = 0.001


class Upstream(asyncio.Protocol):
    __slots__ = ("closed", "loop", "parser", "stream", "transport", "url")

    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.url = b""
        self.stream = False
        self.closed = False

    def connection_made(self, transport):
        self.transport = transport

    def connection_lost(self, exc):
        self.closed = True

    def data_received(self, data):
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.transport.close()

    def on_url(self, url):
        self.url += url

    def on_body(self, body):
        if not self.stream and (b'"stream":true' in body or b'"stream": true' in body):
            self.stream = True

    def on_message_complete(self):
        url, self.url = self.url, b""
        stream, self.stream = self.stream, False
        path, _, query = url.partition(b"?")
        STATS["requests"] += 1
        if path == b"/__stats":
            body = json.dumps(STATS).encode()
            self.transport.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s"
                                 % (len(body), body))
            return
        route = ROUTES.get(path)
        if route is None:
            self.transport.write(NOT_FOUND)
            return
        plain, head, events = route
        if not stream:
            self.transport.write(plain)
            return
        gap, first = GAP, None
        if query:
            params = dict(parse_qsl(query.decode()))
            gap = float(params.get("gap_ms", GAP * 1000)) / 1000
            if "first_ms" in params:
                first = float(params["first_ms"]) / 1000
        STATS["streams_started"] += 1
        self.transport.write(head)
        # Event i is due at start + first + i * gap, on an absolute schedule: relative sleeps would
        # add each timer's overshoot (libuv timers tick in whole ms) to the stream's length, and
        # that drift, different from one phase to the next, would read as latency the gateway added.
        start = self.loop.time() + (gap if first is None else first)
        self.loop.call_at(start, self._tick, events, 0, gap, start)

    def _tick(self, events: list[bytes], i: int, gap: float, start: float) -> None:
        if self.closed:
            STATS["streams_cut"] += 1
            return
        if i + 1 < len(events):
            self.transport.write(events[i])
            self.loop.call_at(start + (i + 1) * gap, self._tick, events, i + 1, gap, start)
        else:
            self.transport.write(events[i] + END)
            STATS["streams_completed"] += 1


async def main(port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Upstream, "127.0.0.1", port, backlog=4096, reuse_address=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("port", type=int)
    ap.add_argument("--gap-ms", type=float, default=1.0)
    ap.add_argument("--repeat", type=int, default=1)
    a = ap.parse_args()
    GAP = a.gap_ms / 1000
    if a.repeat > 1:
        for key, (plain, head, events) in list(ROUTES.items()):
            # The first event opens the message and the last two carry the end and the usage.
            ROUTES[key] = (plain, head, [events[0], *events[1:-2] * a.repeat, *events[-2:]])
    uvloop.install()
    asyncio.run(main(a.port))
