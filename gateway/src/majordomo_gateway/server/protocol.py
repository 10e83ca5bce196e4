"""uvicorn's httptools protocol with bounds on what one client can hold.

``majordomo serve`` runs uvicorn with ``http="majordomo_gateway.server.protocol:GatewayHttpProtocol"``.
Over uvicorn's own protocol it adds:

- **a head size limit** (``server.max_head_bytes``): bytes are fed to the parser only up to the
  limit while a head is being received, so a 64 MiB header costs 64 KiB of parsing, not seconds
  of it (httptools joins a long header piece by piece); over the limit: 431, then close;
- **a body size check before reading** it: a ``Content-Length`` over the request body limit gets
  413 at once, without a byte of the body read;
- **a head timeout** (``server.head_timeout``): from a head's first byte to its end; then 408
  and close.  Armed only when a head did not arrive in one read, so a normal request pays
  nothing for it;
- **an idle timeout for new connections too** (``server.keepalive_timeout``): uvicorn arms its
  keep-alive timer only after a response; a connection that never sends a byte is closed after
  the same time;
- **no chunked trailers**: trailer fields are dropped, never added to the request's headers
  (uvicorn would append them to ``scope["headers"]``);
- **a cap on open connections** (``server.max_connections``, sized against the descriptor limit
  in server/limits.py): past it, the connection idle longest (no request in progress: new,
  between requests, or still sending its head) is closed to make room, so a flood of idle
  connections cannot starve real ones of descriptors; when every connection is busy the
  newcomer gets a 503 with ``Retry-After``.

Answers made here are ``Connection: close`` with a JSON body in the neutral error shape
(proxy/errors.py), which the OpenAI and Anthropic SDKs read.  After such an answer the
connection lingers (its write side shut) reading and dropping what the client still sends, for
up to LINGER_SECONDS or LINGER_BYTES, so that the client reads the answer instead of a reset.

What this relies on from ``uvicorn.protocols.http.httptools_impl.HttpToolsProtocol``
(tests/gateway/server/test_protocol.py runs a real uvicorn and fails when it stops being true):

1. its ``data_received`` is: cancel the keep-alive timer (``_unset_keepalive_if_required``),
   feed the parser, answer ``HttpParserError`` with ``send_400_response`` and handle
   ``HttpParserUpgrade``.  This class does the same steps, bounded;
2. ``on_headers_complete`` starts the request (its ASGI task); ``on_message_complete`` ends its
   body; ``on_response_complete`` runs when a response has gone out;
3. ``self.headers`` is the head's list of (lower-cased name, value), complete when
   ``on_headers_complete`` runs; ``timeout_keep_alive`` / ``timeout_keep_alive_task`` /
   ``timeout_keep_alive_handler`` are the keep-alive timer;
4. the protocol factory runs as each connection is accepted, before its ``connection_made``
   (uvloop and asyncio both), so a descriptor can be freed during a burst of accepts;
5. ``on_header`` receives the head's fields, then a chunked body's trailer fields, and appends
   them all to ``self.headers``, the very list that is the request's ``scope["headers"]``; the
   override here passes on only the head's (tests/gateway/test_request_framing.py).
"""

from __future__ import annotations

import asyncio
import collections
import logging
from typing import Any

import httptools
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol
from uvicorn.server import ServerState

from majordomo_gateway.proxy.errors import neutral_error_body
from majordomo_gateway.server.limits import ConnectionLimits

__all__ = ["LINGER_BYTES", "LINGER_SECONDS", "GatewayHttpProtocol", "configure", "open_connections"]

log = logging.getLogger("majordomo.server")

#: after an answer made here, how long and how much the connection keeps reading and dropping
LINGER_SECONDS = 2.0
LINGER_BYTES = 16 * 1024 * 1024


class _Refused(Exception):
    """Raised from a parser callback to stop parsing a request that has been answered."""


class _Connections:
    """This worker's connections: how many are open, and those with no request in progress,
    longest idle first (an OrderedDict pops its oldest entry in O(1))."""

    __slots__ = ("idle", "open")

    def __init__(self) -> None:
        self.open = 0
        self.idle: collections.OrderedDict[GatewayHttpProtocol, None] = collections.OrderedDict()

    def evict_one(self) -> bool:
        idle = self.idle
        while idle:
            conn, _ = idle.popitem(last=False)
            if conn._close_idle():
                return True
        return False


_connections = _Connections()


def configure(limits: ConnectionLimits) -> None:
    """Set the bounds for this process's connections (each worker, at start)."""
    GatewayHttpProtocol.limits = limits


def open_connections() -> int:
    return _connections.open


class GatewayHttpProtocol(HttpToolsProtocol):
    limits = ConnectionLimits()

    def __init__(self, config: Config, server_state: ServerState, app_state: dict[str, Any],
                 _loop: asyncio.AbstractEventLoop | None = None) -> None:
        super().__init__(config, server_state, app_state, _loop)
        limits = self.limits
        # uvicorn's keep-alive timer (after a response) and ours (before the first request) alike.
        self.timeout_keep_alive = limits.keepalive_timeout  # type: ignore[assignment]
        # Whether the next bytes belong to a request head, and how many of it have arrived.
        self._awaiting_head = True
        self._head_bytes = 0
        self._heads = 0
        self._head_timer: asyncio.TimerHandle | None = None
        # An answer made here has gone out; what the client still sends is dropped.
        self._answered = False
        self._lingered = 0
        self._counted = True
        connections = _connections
        connections.open += 1
        if connections.open > limits.max_connections:
            # Now, while the listener accepts a burst: closing an idle connection frees its
            # descriptor before the next accept needs one.
            connections.evict_one()

    # -- connection ------------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        connections = _connections
        if connections.open > self.limits.max_connections and not connections.evict_one():
            self._answer(503, "too_many_connections",
                         f"Majordomo has {self.limits.max_connections} connections open and none idle "
                         "(server.max_connections). Retry in 1 s.", retry_after=1)
            return
        connections.idle[self] = None
        # uvicorn arms its keep-alive timer only after a response: a connection that never sends
        # anything would otherwise stay open for ever.
        self.timeout_keep_alive_task = self.loop.call_later(self.timeout_keep_alive, self.timeout_keep_alive_handler)

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        self._forget()

    def _forget(self) -> None:
        if self._counted:
            self._counted = False
            _connections.open -= 1
        _connections.idle.pop(self, None)
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _close_idle(self) -> bool:
        """Closed to make room for a new connection; False if it was closing already."""
        transport = self.transport
        closing = transport is None or transport.is_closing()
        self._forget()
        if closing:
            return False
        self._unset_keepalive_if_required()
        transport.close()
        return True

    # -- bytes in --------------------------------------------------------------------------------
    def data_received(self, data: bytes) -> None:
        if self._answered:
            self._linger(len(data))
            return
        self._unset_keepalive_if_required()
        if not self._awaiting_head:
            self._feed(data)
            return
        room = self.limits.max_head_bytes - self._head_bytes
        if len(data) > room:
            self._feed_bounded(data, room)
            return
        self._head_bytes += len(data)
        self._feed(data)
        if self._awaiting_head and self._head_bytes and self._head_timer is None and not self._answered:
            # The head did not arrive in one read: from now on it has head_timeout to complete.
            self._head_timer = self.loop.call_later(self.limits.head_timeout, self._head_timed_out)

    def _feed_bounded(self, data: bytes, room: int) -> None:
        """Feed at most ``room`` bytes of a head; refuse the head if it has not ended by then."""
        heads = self._heads
        if room > 0:
            self._head_bytes += room
            self._feed(data[:room])
            if self._answered or self.transport.is_closing():
                return
        if self._heads == heads:
            self._answer(431, "request_header_too_large",
                         f"The request line and headers are over {self.limits.max_head_bytes} bytes "
                         "(server.max_head_bytes).")
            return
        # The head ended within the limit: the rest is its body, or the next request.
        self.data_received(data[room:])

    def _feed(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
        except httptools.HttpParserError:
            # Also what a callback's _Refused arrives as; the answer has gone out then.
            if not self._answered:
                msg = "Invalid HTTP request received."
                self.logger.warning(msg)
                self.send_400_response(msg)

    # -- parser callbacks ------------------------------------------------------------------------
    def on_header(self, name: bytes, value: bytes) -> None:
        # A chunked body's trailer fields come through this callback too, after the head, and
        # uvicorn appends them to the list that is the request's scope["headers"]: a trailer
        # could then add metadata, carry the Majordomo key or be forwarded upstream as a header
        # (the app reads the headers when it starts, often after the whole body was parsed).
        # Trailers are dropped: nothing of the gateway's needs them.
        if self._awaiting_head:
            super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._awaiting_head = False
        self._heads += 1
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        _connections.idle.pop(self, None)
        limit = self.limits.max_body_bytes
        for name, value in self.headers:
            if name == b"content-length":
                try:
                    length = int(value)
                except ValueError:
                    length = 0  # the parser has refused a malformed length already
                if length > limit:
                    self._answer(413, "request_too_large",
                                 f"The request body is {length} bytes; the limit is {limit} bytes.")
                    raise _Refused
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._awaiting_head = True
        self._head_bytes = 0
        if self.cycle.response_complete and not self.pipeline and not self.transport.is_closing():
            # Answered before its body ended (an early 400): on_response_complete found the request
            # still in progress, and data_received has cancelled the keep-alive timer since, so
            # the connection only becomes idle now; without this it would be held open for good.
            self._unset_keepalive_if_required()
            self.timeout_keep_alive_task = self.loop.call_later(self.timeout_keep_alive,
                                                                self.timeout_keep_alive_handler)
            _connections.idle[self] = None

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self._awaiting_head and self.cycle.response_complete and not self.transport.is_closing():
            _connections.idle[self] = None

    # -- answers made here -----------------------------------------------------------------------
    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self._awaiting_head and not self._answered and not self.transport.is_closing():
            self._answer(408, "request_timeout",
                         f"The request's headers did not arrive within {self.limits.head_timeout:g} s "
                         "(server.head_timeout).")

    def _answer(self, status: int, code: str, message: str, retry_after: int | None = None) -> None:
        body = neutral_error_body(status, code, message, {})
        head = [STATUS_LINE[status], b"content-type: application/json\r\n",
                b"content-length: %d\r\n" % len(body), b"connection: close\r\n"]
        if retry_after is not None:
            head.append(b"retry-after: %d\r\n" % retry_after)
        head += [b"\r\n", body]
        transport = self.transport
        self._answered = True
        _connections.idle.pop(self, None)
        self._unset_keepalive_if_required()
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        transport.write(b"".join(head))
        if transport.can_write_eof():
            transport.write_eof()
            self.loop.call_later(LINGER_SECONDS, transport.close)
        else:
            transport.close()

    def _linger(self, size: int) -> None:
        self._lingered += size
        if self._lingered > LINGER_BYTES:
            self.transport.close()
