"""Fast fake LLM upstream for the stack benchmark (raw asyncio Protocol + httptools on uvloop).

Routes (any method; the request body is read and discarded):
  /v1/chat/completions      canned ~600 B JSON, content-length, keep-alive
  /sse                      20 SSE events + [DONE], chunked, one write per event,
                            paced by SSE_GAP_MS (default 1 ms) so each event is its own TCP read
  /sse-fast                 same 21 events, no pacing
  /sse-break                3 events, then the upstream connection is closed mid-body
                            (no terminating 0-chunk): a broken upstream stream
  /sse-slow                 200 events 25 ms apart (5 s), for client-disconnect tests
  /big                      64 MiB of chunked data written as fast as the proxy reads it
                            (respects pause_writing), for backpressure tests

Stats of /sse-slow and /big are appended to STACK_UPSTREAM_LOG (if set) as one line per stream:
  "<route> sent=<n events or bytes> complete=<0|1>".

Usage: python upstream.py PORT
"""

from __future__ import annotations

import asyncio
import os
import sys

import httptools
import uvloop

N_EVENTS = 20
GAP = float(os.environ.get("SSE_GAP_MS", "1")) / 1000.0
LOG = os.environ.get("STACK_UPSTREAM_LOG")

JSON_BODY = (
    b'{"id":"chatcmpl-0123456789abcdef","object":"chat.completion","created":1730000000,'
    b'"model":"gpt-4o-mini-2024-07-18","choices":[{"index":0,"message":{"role":"assistant",'
    b'"content":"Hello! This is a canned response from the benchmark upstream. It is about as long '
    b'as a short real completion so that body handling costs are realistic.","refusal":null},'
    b'"logprobs":null,"finish_reason":"stop"}],"usage":{"prompt_tokens":120,"completion_tokens":42,'
    b'"total_tokens":162,"prompt_tokens_details":{"cached_tokens":0,"audio_tokens":0},'
    b'"completion_tokens_details":{"reasoning_tokens":0,"audio_tokens":0,"accepted_prediction_tokens":0,'
    b'"rejected_prediction_tokens":0}},"system_fingerprint":"fp_0123456789"}'
)
JSON_RESP = (
    b"HTTP/1.1 200 OK\r\n"
    b"content-type: application/json\r\n"
    b"x-request-id: req_0123456789abcdef\r\n"
    b"openai-processing-ms: 123\r\n"
    b"content-length: " + str(len(JSON_BODY)).encode() + b"\r\n\r\n" + JSON_BODY
)
SSE_HEAD = (
    b"HTTP/1.1 200 OK\r\n"
    b"content-type: text/event-stream; charset=utf-8\r\n"
    b"cache-control: no-cache\r\n"
    b"x-request-id: req_0123456789abcdef\r\n"
    b"transfer-encoding: chunked\r\n\r\n"
)


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def _event(i: int) -> bytes:
    return (
        b'data: {"id":"chatcmpl-0123456789abcdef","object":"chat.completion.chunk","created":1730000000,'
        b'"model":"gpt-4o-mini-2024-07-18","choices":[{"index":0,"delta":{"content":"tok%03d "},'
        b'"logprobs":null,"finish_reason":null}]}\n\n' % i
    )


EVENTS = [_chunk(_event(i)) for i in range(N_EVENTS)] + [
    _chunk(
        b'data: {"id":"chatcmpl-0123456789abcdef","object":"chat.completion.chunk","choices":[],'
        b'"usage":{"prompt_tokens":120,"completion_tokens":20,"total_tokens":140}}\n\ndata: [DONE]\n\n'
    )
]
SLOW_EVENTS = 200
BIG_TOTAL = 64 * 1024 * 1024
BIG_CHUNK = _chunk(b"x" * 65536)
END = b"0\r\n\r\n"


def log(line: str) -> None:
    if LOG:
        with open(LOG, "a") as f:
            f.write(line + "\n")


class Upstream(asyncio.Protocol):
    __slots__ = ("_resume", "closed", "loop", "parser", "paused", "transport", "url")

    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.parser = httptools.HttpRequestParser(self)
        self.transport = None
        self.url = b""
        self.closed = False
        self.paused = False
        self._resume: asyncio.Future | None = None

    def connection_made(self, transport):
        self.transport = transport

    def connection_lost(self, exc):
        self.closed = True
        if self._resume is not None and not self._resume.done():
            self._resume.set_result(None)

    def pause_writing(self):
        self.paused = True

    def resume_writing(self):
        self.paused = False
        if self._resume is not None and not self._resume.done():
            self._resume.set_result(None)

    def data_received(self, data):
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.transport.close()

    def on_url(self, url):
        self.url += url

    def on_message_complete(self):
        url, self.url = self.url, b""
        path = url.split(b"?", 1)[0]
        t = self.transport
        if path == b"/sse":
            t.write(SSE_HEAD)
            self.loop.call_later(GAP, self._tick, 0)
        elif path == b"/sse-fast":
            t.write(SSE_HEAD + b"".join(EVENTS) + END)
        elif path == b"/sse-break":
            t.write(SSE_HEAD + b"".join(EVENTS[:3]))
            self.loop.call_later(0.05, t.close)
        elif path == b"/sse-slow":
            t.write(SSE_HEAD)
            self.loop.create_task(self._slow())
        elif path == b"/big":
            t.write(SSE_HEAD.replace(b"text/event-stream", b"application/octet-stream"))
            self.loop.create_task(self._big())
        else:
            t.write(JSON_RESP)

    def _tick(self, i: int) -> None:
        if self.closed:
            return
        self.transport.write(EVENTS[i])
        i += 1
        if i < len(EVENTS):
            self.loop.call_later(GAP, self._tick, i)
        else:
            self.transport.write(END)

    async def _slow(self) -> None:
        sent = 0
        while sent < SLOW_EVENTS and not self.closed:
            await asyncio.sleep(0.025)
            if self.closed:
                break
            self.transport.write(_chunk(_event(sent)))
            sent += 1
        if not self.closed:
            self.transport.write(END)
        log(f"/sse-slow sent={sent} complete={int(sent == SLOW_EVENTS and not self.closed)}")

    async def _big(self) -> None:
        sent = 0
        while sent < BIG_TOTAL and not self.closed:
            if self.paused:
                self._resume = self.loop.create_future()
                await self._resume
                continue
            self.transport.write(BIG_CHUNK)
            sent += 65536
            await asyncio.sleep(0)
        if not self.closed:
            self.transport.write(END)
        log(f"/big sent={sent} complete={int(sent >= BIG_TOTAL and not self.closed)}")


async def main(port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Upstream, "127.0.0.1", port, backlog=4096, reuse_address=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    uvloop.install()
    asyncio.run(main(int(sys.argv[1])))
