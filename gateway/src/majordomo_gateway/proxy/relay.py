"""Relay the upstream's answer to the client: whole, or as it arrives (streams).

The relay never waits on usage parsing, pricing or the database: the usage parser only looks at
the bytes as they pass (or the body is kept, bounded, for metering after the last byte).

Three ways a body goes out:

- whole: a non-streamed answer of known, modest size is read at once and sent in one piece;
- eager: a plain stream is parsed and sent on from inside the upstream's read callback (the
  ``sink``), with no task wake-up or loop iteration per event; anything unusual (the client gone,
  a send that has to wait) declines or hands over to the loop;
- the loop: everything else, and what the eager path hands over.

When the client leaves mid-stream, reading goes on, bounded in bytes and seconds, only to learn
the usage.  ``aborted`` means the client left before the stream's terminal event (the usage
parser's ``ended``) had been sent to it: many clients close the connection as soon as they have
it, before the body's own end (the last chunk of the chunked encoding) arrives.  A response cut
short (the upstream broke, or the client left) ends without its final message, on purpose
(proxy/server_glue.py).
"""

from __future__ import annotations

import asyncio
import time
import zlib
from collections.abc import Callable

from majordomo_gateway.config import ProxySettings
from majordomo_gateway.providers.base import StreamUsageParser
from majordomo_gateway.proxy.adapter import ResponseTransform
from majordomo_gateway.proxy.errors import GatewayError
from majordomo_gateway.proxy.exchange import Exchange, Receive
from majordomo_gateway.proxy.headers import response_headers
from majordomo_gateway.proxy.server_glue import drop_on_purpose, send_now, still_connected
from majordomo_gateway.proxy.upstream import UpstreamBroken, UpstreamError, UpstreamTimeout
from majordomo_gateway.proxy.upstream_api import UpstreamAnswer
from majordomo_gateway.storage.records import RequestRecord

__all__ = ["MAX_ERROR_CAPTURE", "MAX_PARSED_BODY", "Decoder", "relay", "relay_stream", "relay_whole",
           "watch_disconnect"]

# A non-streamed body larger than this is relayed but not parsed for usage.
MAX_PARSED_BODY = 32 * 1024 * 1024
MAX_ERROR_CAPTURE = 4096
# Non-streamed bodies up to this size (with a Content-Length) are read whole and sent in one piece.
WHOLE_BODY_LIMIT = 1024 * 1024
# Response headers that no longer describe a body once a route adapter has transformed it.
_TRANSFORMED_DROPPED = frozenset({b"content-length", b"content-encoding"})
_COMPRESSED = (b"gzip", b"x-gzip", b"deflate")


class Decoder:
    """Undo gzip/deflate for the usage parser only; the client still gets the bytes unchanged."""

    __slots__ = ("_z",)

    def __init__(self) -> None:
        self._z = zlib.decompressobj(wbits=47)  # 32 + 15: gzip or zlib header, auto-detected

    def __call__(self, chunk: bytes) -> bytes:
        try:
            return self._z.decompress(chunk)
        except zlib.error:
            return b""


async def relay(ex: Exchange, response: UpstreamAnswer, limits: ProxySettings) -> None:
    """Send the upstream's answer on; ``ex`` gets what metering needs."""
    record, route = ex.record, ex.route
    assert record is not None and route is not None
    record.status_code = response.status
    if response.status >= 500 or response.status == 429:
        ex.upstream_error = "http_429" if response.status == 429 else "http_5xx"
    content_type = response.content_type.decode("latin-1")
    streamed = ex.request_info.stream or content_type.startswith("text/event-stream")
    record.streamed = streamed
    ok = response.status < 400
    if streamed and ok:
        ex.parser = route.provider.stream_parser(ex.upstream_path.decode("latin-1"), ex.request_info)
    decode = Decoder() if response.content_encoding in _COMPRESSED else None
    transform: ResponseTransform | None = None
    adapted = ex.adapted
    if adapted is not None and adapted.response is not None:
        transform = adapted.response(response.status, content_type)
    out_headers = response_headers(response.raw_headers, record.id.encode())
    if transform is not None:
        out_headers = [(k, v) for k, v in out_headers if k not in _TRANSFORMED_DROPPED]
    length = response.content_length
    if not streamed and transform is None and length is not None and length <= WHOLE_BODY_LIMIT:
        # The common case (a JSON answer of known, modest size): one read, one send.
        await relay_whole(ex, response, out_headers, decode)
        return
    await relay_stream(ex, response, out_headers, decode, transform,
                       MAX_PARSED_BODY if ok else MAX_ERROR_CAPTURE, limits)


async def relay_whole(ex: Exchange, response: UpstreamAnswer, out_headers: list[tuple[bytes, bytes]],
                      decode: Decoder | None) -> None:
    try:
        body = await response.read()
    except UpstreamError as exc:
        # Nothing has reached the client yet, so it can get a clean error instead of a cut body.
        assert ex.route is not None
        ex.upstream_error = "broken"
        raise GatewayError(502, "upstream_broken",
                           f"The {ex.route.name} upstream closed the connection before its response was complete.",
                           provider=ex.route.name, record_message=f"upstream response broken: {exc}") from exc
    ex.upstream_ended = time.perf_counter()
    send = ex.send
    await send({"type": "http.response.start", "status": response.status, "headers": out_headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})
    if body:
        ex.captured.append(decode(body) if decode is not None else body)


class _Capture:
    """Keeps a body for metering, up to ``limit`` bytes (then says it was cut)."""

    __slots__ = ("limit", "parts", "size")

    def __init__(self, parts: list[bytes], limit: int) -> None:
        self.parts = parts
        self.limit = limit
        self.size = 0

    def add(self, data: bytes) -> None:
        if self.size < self.limit:
            self.parts.append(data)
            self.size += len(data)


class _Stream:
    """The state one streamed relay shares between its read loop and the eager sink."""

    __slots__ = ("abandoned_at", "abandoned_bytes", "completed", "connected", "delivered", "disconnected", "limits",
                 "pending")

    def __init__(self, limits: ProxySettings, connected: Callable[[], bool]) -> None:
        self.disconnected = asyncio.Event()
        self.completed = False
        # The stream's terminal event has been sent to the client: it has the whole answer.
        self.delivered = False
        # Whether the send that just returned reached the client's connection (server_glue).
        self.connected = connected
        # A send that had to wait for the client (eager path); later bytes wait for it.
        self.pending: asyncio.Future[None] | None = None
        self.abandoned_at: float | None = None
        self.abandoned_bytes = 0
        self.limits = limits

    def abandon(self, record: RequestRecord, size: int) -> bool:
        """The client has left: count what is read on for the usage; True when that is enough."""
        if self.abandoned_at is None:
            record.aborted = not self.delivered
            self.abandoned_at = time.monotonic()
        self.abandoned_bytes += size
        return (self.abandoned_bytes > self.limits.abandoned_stream_max_bytes
                or time.monotonic() - self.abandoned_at > self.limits.abandoned_stream_max_seconds)

    def sent(self, parser: StreamUsageParser | None) -> None:
        """A send has returned: the client has the terminal event if the parser had seen it."""
        if parser is not None and parser.ended and not self.delivered and self.connected():
            self.delivered = True

    def sent_later(self, send: asyncio.Future[None]) -> None:
        """``sent`` for a send carrying the terminal event that had to wait (its done callback)."""
        if not send.cancelled() and send.exception() is None and self.connected():
            self.delivered = True


async def relay_stream(ex: Exchange, response: UpstreamAnswer, out_headers: list[tuple[bytes, bytes]],
                       decode: Decoder | None, transform: ResponseTransform | None, capture_limit: int,
                       limits: ProxySettings) -> None:
    record = ex.record
    assert record is not None
    send = ex.send
    await send({"type": "http.response.start", "status": response.status, "headers": out_headers})
    state = _Stream(limits, still_connected(send))
    watcher = asyncio.get_running_loop().create_task(watch_disconnect(ex.receive, state.disconnected)) \
        if record.streamed else None
    capture: _Capture | None = None
    feed: Callable[[bytes], None]
    if ex.parser is not None:
        feed = ex.parser.feed
        if transform is None and decode is None:
            response.set_sink(_eager_sink(ex, response, state))
    else:
        capture = _Capture(ex.captured, capture_limit)
        feed = capture.add
    try:
        await _pump(ex, response, state, decode, transform, feed)
        if state.pending is not None:
            await state.pending
            state.pending = None
    except asyncio.CancelledError:
        record.aborted = not state.delivered
        raise
    finally:
        ex.upstream_ended = time.perf_counter()
        response.set_sink(None)
        if capture is not None:
            ex.truncated = capture.size >= capture_limit
        if state.pending is not None:
            state.pending.cancel()
        if watcher is not None:
            watcher.cancel()
    if state.completed:
        return  # the client has every byte (the server reports a disconnect after that)
    gone = state.disconnected.is_set()
    if gone:
        record.aborted = not state.delivered
    if ex.upstream_broken is not None or gone:
        # Returning without the final body message makes the server drop the connection:
        # the client sees a broken stream, never a clean end of a truncated one.
        drop_on_purpose()
        return
    tail = transform.finish() if transform is not None else b""
    await send({"type": "http.response.body", "body": tail, "more_body": False})


def _eager_sink(ex: Exchange, response: UpstreamAnswer, state: _Stream) -> Callable[[bytes, bool], bool]:
    record, parser, send, started = ex.record, ex.parser, ex.send, ex.started
    assert record is not None and parser is not None
    disconnected = state.disconnected
    feed = parser.feed

    def sink(data: bytes, last: bool) -> bool:
        if state.pending is not None or disconnected.is_set():
            return False
        if record.time_to_first_token_ms is None:
            record.time_to_first_token_ms = round((time.perf_counter() - started) * 1000, 3)
        feed(data)
        suspended = send_now(send, {"type": "http.response.body", "body": data, "more_body": not last})
        state.completed = last
        if suspended is None:
            if parser.ended:
                state.sent(parser)
        else:
            # The client's socket is full: stop reading the upstream until it drains.
            state.pending = suspended
            response.pause_reading()
            suspended.add_done_callback(lambda _: response.resume_reading())
            if parser.ended and not state.delivered:
                suspended.add_done_callback(state.sent_later)
        return True

    return sink


async def _pump(ex: Exchange, response: UpstreamAnswer, state: _Stream, decode: Decoder | None,
                transform: ResponseTransform | None, feed: Callable[[bytes], None]) -> None:
    """Read the upstream body to its end (or until it breaks, or the client has been gone long
    enough), passing each read on unless the eager sink already did."""
    record, send, started, parser = ex.record, ex.send, ex.started, ex.parser
    assert record is not None
    timed = record.streamed
    disconnected = state.disconnected
    readany = response.readany
    while True:
        try:
            chunk = await readany()
        except UpstreamTimeout:
            ex.upstream_broken = "upstream stream timed out"
            ex.upstream_error = "timeout"
            break
        except UpstreamBroken as exc:
            ex.upstream_broken = f"upstream stream broken: {exc}"
            ex.upstream_error = "broken"
            break
        if not chunk:
            break
        if timed and record.time_to_first_token_ms is None:
            record.time_to_first_token_ms = round((time.perf_counter() - started) * 1000, 3)
        plain = decode(chunk) if decode is not None else chunk
        feed(plain)
        if state.pending is not None:
            await state.pending
            state.pending = None
        if state.abandoned_at is None and not disconnected.is_set():
            if transform is not None:
                chunk = transform.feed(plain)
                if chunk:
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
                    state.sent(parser)
                continue
            if response.at_eof:
                # The body ended with this read (a stream's last event and its end usually share
                # a packet): one write carries both.
                await send({"type": "http.response.body", "body": chunk, "more_body": False})
                state.completed = True
                break
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
            state.sent(parser)
            continue
        if state.abandon(record, len(chunk)):
            break


async def watch_disconnect(receive: Receive, disconnected: asyncio.Event) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            disconnected.set()
            return
