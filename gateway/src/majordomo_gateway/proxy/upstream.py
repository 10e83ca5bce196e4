"""The upstream HTTP/1.1 client: a keep-alive pool of asyncio connections parsed by httptools.

Why not aiohttp's client: a relay needs only "send these bytes, hand me the body as it
arrives", and aiohttp's response machinery (StreamReader, multidict headers, URL objects,
tracing hooks) was the largest single item in the gateway's profile (figures in
docs/stack-choice.md, "Revisited").  This client keeps what a relay needs (TLS with
the system trust store, connect and read timeouts, keep-alive reuse with one retry on a stale
connection for idempotent methods, backpressure, a short DNS cache) and nothing else;
docs/stack-choice.md and docs/performance.md have the measurements.

    client = UpstreamClient(connect_timeout=10, read_timeout=600)
    response = await client.request(origin, "POST", b"/v1/chat/completions", headers, body)
    response.status, response.raw_headers, response.content_length
    chunk = await response.readany()   # b"" once the body is complete
    response.release()                 # back to the pool when complete, else closed

Errors: UpstreamConnectError (no connection), UpstreamTimeout (connect or read), UpstreamBroken
(the connection closed before the body was complete), UpstreamProtocolError (an UpstreamBroken:
bad HTTP, a 101, a 204/304 announcing a body).
"""

from __future__ import annotations

import asyncio
import collections
import socket
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import httptools

# Reading pauses when this much body is buffered and the relay has not taken it (slow client).
_HIGH_WATER = 256 * 1024
# An idle pooled connection older than this is not reused: servers drop idle keep-alives
# (OpenAI and Anthropic after about a minute), and a write into a dropped one costs a retry.
DEFAULT_KEEPALIVE_SECONDS = 15.0
_MAX_IDLE_PER_ORIGIN = 256
# Methods a retry may send twice (RFC 9110 §9.2.2).  Any other (a POST above all: a provider may
# have billed it) is sent once: when a reused connection breaks before the answer, the upstream
# may have read the request, so the error goes to the client instead of a second attempt.
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"})
# Resolved addresses are reused this long: a burst of new connections costs one lookup, not one
# getaddrinfo (a thread-pool round trip, or a slow resolver) each.
DNS_TTL_SECONDS = 60.0


Sink = Callable[[bytes, bool], bool]


class UpstreamError(Exception):
    """Base class; the message never contains request headers or bodies (they carry keys)."""


class UpstreamConnectError(UpstreamError):
    pass


class UpstreamTimeout(UpstreamError):
    pass


class UpstreamBroken(UpstreamError):
    pass


class UpstreamProtocolError(UpstreamBroken):
    """The upstream's answer is not one HTTP allows to be relayed: a 101 (it switched protocols),
    a 204 or 304 announcing a body, or bytes that do not parse."""


@dataclass(frozen=True, slots=True)
class Origin:
    """Where requests go: parsed once per configured base URL, never from a request."""

    scheme: str
    host: str
    port: int
    base_path: bytes  # the base URL's path, without a trailing slash ("" or b"/v1beta/openai")
    host_header: bytes
    key: tuple[str, str, int] = field(init=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "key", (self.scheme, self.host, self.port))

    @classmethod
    def from_url(cls, url: str) -> Origin:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {url!r}")
        default_port = 443 if parts.scheme == "https" else 80
        port = parts.port or default_port
        host = parts.hostname
        shown = f"[{host}]" if ":" in host else host
        host_header = shown if port == default_port else f"{shown}:{port}"
        return cls(parts.scheme, host, port, parts.path.rstrip("/").encode("latin-1"),
                   host_header.encode("ascii") if host_header.isascii() else host_header.encode("idna"))


class _Connection(asyncio.Protocol):
    """One TCP (or TLS) connection; carries one response at a time."""

    __slots__ = ("closed", "idle_since", "origin_key", "parser", "response", "reusable", "transport")

    def __init__(self, origin_key: tuple[str, str, int]) -> None:
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.response: UpstreamResponse | None = None
        self.closed = False
        self.reusable = True
        self.idle_since = 0.0
        self.origin_key = origin_key

    # -- asyncio.Protocol -------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        response = self.response
        if response is None:
            # Bytes nobody asked for: this connection can no longer be trusted to frame a response.
            self.reusable = False
            self.close()
            return
        response._got_bytes = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self.reusable = False
            response._fail(UpstreamProtocolError("upstream switched protocols"))
            self.close()
        except httptools.HttpParserError as exc:
            self.reusable = False
            response._fail(UpstreamProtocolError(f"upstream sent malformed HTTP: {exc}"))
            self.close()
        if response._sink is not None:
            response._deliver()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.reusable = False
        response = self.response
        if response is not None:
            response._connection_lost()

    def pause_writing(self) -> None:  # request bodies are written at once; nothing to pause
        pass

    def resume_writing(self) -> None:
        pass

    # -- httptools callbacks ----------------------------------------------------------------
    def on_header(self, name: bytes, value: bytes) -> None:
        response = self.response
        if response is not None:
            response.raw_headers.append((name, value))

    def on_headers_complete(self) -> None:
        response = self.response
        if response is not None:
            response._head_complete(self.parser.get_status_code())

    def on_body(self, body: bytes) -> None:
        response = self.response
        if response is not None:
            response._feed(body)

    def on_message_complete(self) -> None:
        response = self.response
        if response is None:
            return
        if response._interim:
            response._interim = False
            response.raw_headers = []
            return
        if not self.parser.should_keep_alive():
            self.reusable = False
        response._complete()

    # -----------------------------------------------------------------------------------------
    def close(self) -> None:
        self.reusable = False
        self.closed = True
        if self.transport is not None:
            self.transport.close()


class UpstreamResponse:
    """The upstream's answer: head first, then the body as it arrives."""

    __slots__ = (
        "_buffer",
        "_buffered",
        "_client",
        "_conn",
        "_eof",
        "_error",
        "_got_bytes",
        "_head",
        "_head_only",
        "_interim",
        "_last_read",
        "_loop",
        "_paused",
        "_read_timeout",
        "_released",
        "_sink",
        "_timer",
        "_until_close",
        "_waiter",
        "content_encoding",
        "content_length",
        "content_type",
        "raw_headers",
        "status",
    )

    def __init__(self, conn: _Connection, client: UpstreamClient, loop: asyncio.AbstractEventLoop,
                 read_timeout: float, head_only: bool) -> None:
        self.status = 0
        self.raw_headers: list[tuple[bytes, bytes]] = []
        self.content_length: int | None = None
        self.content_type = b""
        self.content_encoding = b""  # lower-cased
        self._conn = conn
        self._client = client
        self._loop = loop
        self._buffer: collections.deque[bytes] = collections.deque()
        self._buffered = 0
        self._waiter: asyncio.Future[None] | None = None
        self._head: asyncio.Future[None] = loop.create_future()
        self._eof = False
        self._error: UpstreamError | None = None
        self._paused = False
        self._interim = False
        self._head_only = head_only
        self._until_close = False
        self._got_bytes = False
        self._read_timeout = read_timeout
        self._last_read = loop.time()
        self._timer: asyncio.TimerHandle | None = loop.call_at(self._last_read + read_timeout, self._check_timeout)
        self._released = False
        self._sink: Sink | None = None

    # -- fed by the connection ----------------------------------------------------------------
    def _head_complete(self, status: int) -> None:
        if 100 <= status < 200 and status != 101:
            self._interim = True  # 100 Continue and friends: the real head follows
            return
        problem = _unrelayable_status(status)
        if problem is not None:
            self._refuse(problem)
            return
        self.status = status
        length = None
        chunked = False
        # One pass over the head for everything the relay asks about.
        for name, value in self.raw_headers:
            lower = name.lower()
            if lower == b"content-type":
                self.content_type = value
            elif lower == b"content-length":
                try:
                    length = int(value)
                except ValueError:
                    length = None
            elif lower == b"content-encoding":
                self.content_encoding = value.lower()
            elif lower == b"transfer-encoding" and b"chunked" in value.lower():
                chunked = True
        if status in (204, 304) and (chunked or (length is not None and length > 0)):
            # No body may follow (RFC 9110 §6.4.1): relayed, the client would wait for bytes that
            # never come, or take them for the next answer.
            self._refuse(f"upstream answered {status} with a body ("
                         + ("Transfer-Encoding: chunked" if chunked else f"Content-Length: {length}") + ")")
            return
        self.content_length = length
        self._until_close = length is None and not chunked and status not in (204, 304)
        if self._head_only or status in (204, 304):
            # No body follows a HEAD answer whatever its headers say; httptools cannot be told,
            # so this connection is not reused.
            self._conn.reusable = self._conn.reusable and not self._head_only
            self._complete()
        if not self._head.done():
            self._head.set_result(None)

    def _refuse(self, reason: str) -> None:
        """The answer cannot be relayed: the request fails with ``reason``, the connection goes."""
        self._conn.reusable = False
        self._fail(UpstreamProtocolError(reason))
        self._conn.close()

    def _feed(self, body: bytes) -> None:
        self._buffer.append(body)
        self._buffered += len(body)
        self._last_read = self._loop.time()
        if self._sink is not None:
            return  # handed over once the whole read is parsed (_deliver), so the end can ride along
        self._wake()
        if self._buffered > _HIGH_WATER and not self._paused and self._conn.transport is not None:
            self._paused = True
            self._conn.transport.pause_reading()

    def _complete(self) -> None:
        if self._eof:
            return
        self._eof = True
        self._stop_timer()
        self._wake()

    def _fail(self, error: UpstreamError) -> None:
        if self._eof or self._error is not None:
            return
        self._error = error
        self._stop_timer()
        if not self._head.done():
            self._head.set_exception(error)
            self._head.exception()  # retrieved by request(); keeps asyncio from warning otherwise
        self._wake()

    def _connection_lost(self) -> None:
        if self._eof:
            return
        if self._head.done() and self._until_close and self._error is None:
            self._complete()  # a body delimited by the connection's end is complete now
            return
        self._fail(UpstreamBroken("upstream closed the connection before the response was complete"))

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)

    def _check_timeout(self) -> None:
        self._timer = None
        if self._eof or self._error is not None:
            return
        deadline = self._last_read + self._read_timeout
        if self._loop.time() < deadline:
            self._timer = self._loop.call_at(deadline, self._check_timeout)
            return
        self._conn.reusable = False
        self._fail(UpstreamTimeout("upstream read timed out"))
        self._conn.close()

    def _stop_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _deliver(self) -> None:
        """Offer what this read brought to the sink; what it declines is read the usual way."""
        sink = self._sink
        if sink is not None and self._buffer and self._error is None:
            data = self._take_buffered()
            try:
                if sink(data, self._eof):
                    return
            except Exception:
                # Not ours to handle inside a read callback: the relay meets it again in readany's
                # bytes, on its own task, where it is handled (and logged) as usual.
                self._sink = None
            self._buffer.append(data)
            self._buffered = len(data)
        self._wake()

    def _take_buffered(self) -> bytes:
        buffer = self._buffer
        data = buffer.popleft() if len(buffer) == 1 else b"".join(buffer)
        buffer.clear()
        self._buffered = 0
        return data

    # -- used by the relay --------------------------------------------------------------------
    def set_sink(self, sink: Sink | None) -> None:
        """Hand body bytes to ``sink(data, last)`` as each read is parsed, inside the read callback.

        A relay that can pass bytes on synchronously (the common case: a stream going to a client
        that keeps up) then costs no task wake-up and no loop iteration per event.  The sink
        returns False to decline: the bytes stay here for readany().  ``last`` is True when the
        body ended with this read.  readany() still reports the end and errors.
        """
        self._sink = sink

    def pause_reading(self) -> None:
        if self._conn.transport is not None and not self._conn.closed:
            self._conn.transport.pause_reading()

    def resume_reading(self) -> None:
        if self._conn.transport is not None and not self._conn.closed and not self._paused:
            self._conn.transport.resume_reading()

    def header(self, name: bytes) -> bytes | None:
        """First value of a header (``name`` lower-case)."""
        for key, value in self.raw_headers:
            if key.lower() == name:
                return value
        return None

    @property
    def at_eof(self) -> bool:
        """The whole body has arrived and been handed out."""
        return self._eof and not self._buffer

    async def readany(self) -> bytes:
        """Whatever body bytes have arrived (waiting for some); b"" when the body is complete."""
        while True:
            if self._buffer:
                data = self._take_buffered()
                if self._paused:
                    self._paused = False
                    if self._conn.transport is not None:
                        self._conn.transport.resume_reading()
                return data
            if self._error is not None:
                raise self._error
            if self._eof:
                return b""
            waiter = self._waiter = self._loop.create_future()
            await waiter

    async def read(self) -> bytes:
        parts = []
        while chunk := await self.readany():
            parts.append(chunk)
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def release(self) -> None:
        """Give the connection back (only if the body was read to its end), else close it."""
        if self._released:
            return
        self._released = True
        self._stop_timer()
        conn = self._conn
        conn.response = None
        if self._eof and self._error is None and not self._buffer and conn.reusable and not conn.closed:
            self._client._put_back(conn)
        else:
            conn.close()

    async def __aenter__(self) -> UpstreamResponse:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.release()


class UpstreamClient:
    def __init__(self, *, connect_timeout: float, read_timeout: float,
                 keepalive_seconds: float = DEFAULT_KEEPALIVE_SECONDS,
                 ssl_context: ssl.SSLContext | None = None) -> None:
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.keepalive_seconds = keepalive_seconds
        self._ssl_context = ssl_context
        self._idle: dict[tuple[str, str, int], list[_Connection]] = {}
        self._addresses: dict[tuple[str, int], tuple[float, list[tuple[int, str, int]]]] = {}
        self._resolving: dict[tuple[str, int], asyncio.Future[list[tuple[int, str, int]]]] = {}
        self._closed = False

    def _ssl(self) -> ssl.SSLContext:
        if self._ssl_context is None:
            # The system trust store (SSL_CERT_FILE / SSL_CERT_DIR are honoured), HTTP/1.1 only.
            context = ssl.create_default_context()
            context.set_alpn_protocols(["http/1.1"])
            self._ssl_context = context
        return self._ssl_context

    async def request(self, origin: Origin, method: str, target: bytes, headers: list[tuple[str, str]],
                      body: bytes) -> UpstreamResponse:
        """Send one request; return once the response head has arrived.

        ``target`` is the path and query after the origin's base path; ``headers`` must not hold
        Host, Content-Length or hop-by-hop headers (proxy/headers.py removes them).
        """
        head = _request_head(method, origin, target, headers, body)
        loop = asyncio.get_running_loop()
        conn = self._idle_connection(origin, loop)
        reused = conn is not None
        while True:
            if conn is None:
                conn = await self._connect(origin, loop)
            response = UpstreamResponse(conn, self, loop, self.read_timeout, method == "HEAD")
            conn.response = response
            transport = conn.transport
            assert transport is not None
            if body and len(body) > 65536:
                transport.write(head)
                transport.write(body)
            else:
                transport.write(head + body if body else head)
            try:
                await response._head
            except UpstreamBroken:
                response.release()
                if reused and not response._got_bytes and method in IDEMPOTENT_METHODS:
                    # The server dropped a pooled connection as we reused it.  Whether it read the
                    # request first cannot be known, so only a request that may be sent twice is
                    # retried, once, on a new connection.  (A connection the server had closed
                    # before we picked it is never used: _idle_connection skips it.)
                    conn, reused = None, False
                    continue
                raise
            except BaseException:
                response.release()
                raise
            return response

    def _idle_connection(self, origin: Origin, loop: asyncio.AbstractEventLoop) -> _Connection | None:
        idle = self._idle.get(origin.key)
        if not idle:
            return None
        oldest_allowed = loop.time() - self.keepalive_seconds
        while idle:
            conn = idle.pop()  # most recently used first: the one least likely to be dropped
            if conn.closed or not conn.reusable or conn.idle_since < oldest_allowed:
                conn.close()
                continue
            return conn
        return None

    async def _connect(self, origin: Origin, loop: asyncio.AbstractEventLoop) -> _Connection:
        if self._closed:
            raise UpstreamConnectError("the upstream client is closed")
        tls = origin.scheme == "https"
        try:
            async with asyncio.timeout(self.connect_timeout):
                addresses = await self._resolve(origin, loop)
                for index, (family, address, port) in enumerate(addresses):
                    try:
                        _, conn = await loop.create_connection(
                            lambda: _Connection(origin.key), address, port, family=family,
                            ssl=self._ssl() if tls else None, server_hostname=origin.host if tls else None,
                        )
                        return conn
                    except OSError:
                        if index == len(addresses) - 1:
                            # Maybe the addresses changed: the next connection asks the resolver again.
                            self._addresses.pop((origin.host, origin.port), None)
                            raise
        except TimeoutError as exc:
            raise UpstreamTimeout(f"connecting to {origin.host}:{origin.port} timed out") from exc
        except (OSError, ssl.SSLError) as exc:
            raise UpstreamConnectError(f"cannot connect to {origin.host}:{origin.port}: "
                                       f"{type(exc).__name__}") from exc
        raise UpstreamConnectError(f"cannot connect to {origin.host}:{origin.port}: no address")

    async def _resolve(self, origin: Origin, loop: asyncio.AbstractEventLoop) -> list[tuple[int, str, int]]:
        key = (origin.host, origin.port)
        cached = self._addresses.get(key)
        if cached is not None and cached[0] > time.monotonic():
            return cached[1]
        lookup = self._resolving.get(key)
        if lookup is None:  # one lookup per host at a time, shared by every connection waiting on it
            lookup = asyncio.ensure_future(self._lookup(origin, loop))
            self._resolving[key] = lookup
            lookup.add_done_callback(lambda done: self._lookup_done(key, done))
        return await asyncio.shield(lookup)

    def _lookup_done(self, key: tuple[str, int], lookup: asyncio.Future[list[tuple[int, str, int]]]) -> None:
        self._resolving.pop(key, None)
        if not lookup.cancelled():
            lookup.exception()  # every waiter may have given up: not an unhandled error

    async def _lookup(self, origin: Origin, loop: asyncio.AbstractEventLoop) -> list[tuple[int, str, int]]:
        infos = await loop.getaddrinfo(origin.host, origin.port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
        addresses: list[tuple[int, str, int]] = []
        for family, _, _, _, sockaddr in infos:
            address = (int(family), str(sockaddr[0]), int(sockaddr[1]))
            if address not in addresses:
                addresses.append(address)
        if not addresses:
            raise OSError(f"no address for {origin.host}")
        self._addresses[(origin.host, origin.port)] = (time.monotonic() + DNS_TTL_SECONDS, addresses)
        return addresses

    def _put_back(self, conn: _Connection) -> None:
        if self._closed:
            conn.close()
            return
        idle = self._idle.setdefault(conn.origin_key, [])
        if len(idle) >= _MAX_IDLE_PER_ORIGIN:
            idle.pop(0).close()
        conn.idle_since = asyncio.get_running_loop().time()
        idle.append(conn)

    def idle_count(self) -> int:
        return sum(1 for conns in self._idle.values() for c in conns if not c.closed)

    async def close(self) -> None:
        self._closed = True
        for conns in self._idle.values():
            for conn in conns:
                conn.close()
        self._idle.clear()


def _request_head(method: str, origin: Origin, target: bytes, headers: list[tuple[str, str]], body: bytes) -> bytes:
    fields = "".join([f"{name}: {value}\r\n" for name, value in headers])
    if body or method not in ("GET", "HEAD", "DELETE", "OPTIONS"):
        fields += f"Content-Length: {len(body)}\r\n"
    return b"".join((method.encode("latin-1"), b" ", origin.base_path, target, b" HTTP/1.1\r\nHost: ",
                     origin.host_header, b"\r\n", fields.encode("latin-1"), b"\r\n"))


def _unrelayable_status(status: int) -> str | None:
    """Why a final status can't be relayed, or None when it can."""
    if status == 101:
        # A request of ours never asks to upgrade: what follows is not HTTP.
        return f"upstream answered {status} Switching Protocols"
    if not 200 <= status <= 599:
        # HTTP has no such status (RFC 9110 §15): the server can't even write its status line.
        return f"upstream answered status {status}, which is not an HTTP status"
    return None
