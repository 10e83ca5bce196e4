"""server/protocol.py on a real uvicorn and raw sockets: head size limit (431), body length
refused before reading (413), head and idle timeouts (408, close), the connection cap.

These also pin what the protocol relies on from uvicorn's HttpToolsProtocol (its docstring,
points 1-4): after a uvicorn upgrade a failure here means the subclass needs adapting.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator, Iterator, MutableMapping
from typing import Any

import orjson
import pytest
import uvicorn
from majordomo_gateway.server import protocol
from majordomo_gateway.server.limits import ConnectionLimits, fd_budget
from majordomo_gateway.server.protocol import GatewayHttpProtocol

Scope = MutableMapping[str, Any]


class _App:
    """/ok answers ``ok <body length>``; /hold waits until released; everything is counted."""

    def __init__(self) -> None:
        self.calls = 0
        self.release = asyncio.Event()
        self.arrivals: asyncio.Queue[str] = asyncio.Queue()

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        self.calls += 1
        self.arrivals.put_nowait(scope["path"])
        if scope["path"] == "/early":  # answers before reading the body, as a 400 for a bad path does
            await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"5")]})
            await send({"type": "http.response.body", "body": b"early"})
            return
        size = 0
        while True:
            message = await receive()
            size += len(message.get("body", b""))
            if not message.get("more_body"):
                break
        if scope["path"] == "/hold":
            await self.release.wait()
        body = f"ok {size}".encode()
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/plain"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})


@pytest.fixture
def limits() -> Iterator[list[ConnectionLimits]]:
    """Set ``limits[0]`` before the server fixture starts to change the bounds for one test."""
    holder = [ConnectionLimits(max_head_bytes=4096, head_timeout=0.5, keepalive_timeout=0.5, max_connections=64,
                               max_body_bytes=1 << 20)]
    previous = GatewayHttpProtocol.limits
    yield holder
    protocol.configure(previous)


@pytest.fixture
async def server(limits: list[ConnectionLimits]) -> AsyncIterator[tuple[_App, int]]:
    protocol.configure(limits[0])
    app = _App()
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, http=GatewayHttpProtocol, lifespan="off", log_config=None, access_log=False,
                            timeout_keep_alive=1)
    running = uvicorn.Server(config)
    task = asyncio.get_running_loop().create_task(running.serve(sockets=[sock]))
    while not running.started:
        await asyncio.sleep(0.01)
        assert not task.done(), "uvicorn did not start"
    try:
        yield app, port
    finally:
        app.release.set()
        running.should_exit = True
        await asyncio.wait_for(task, 10)
        sock.close()


async def _exchange(port: int, data: bytes, *, timeout: float = 5.0) -> bytes:
    """Send ``data``, then read until the server closes the connection."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        return await asyncio.wait_for(reader.read(), timeout)
    finally:
        writer.close()


def _status(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1])


def _body(answer: bytes) -> dict[str, Any]:
    return orjson.loads(answer.partition(b"\r\n\r\n")[2])


def _head(size: int, path: str = "/ok", extra: str = "") -> bytes:
    """A request head of exactly ``size`` bytes (padded with one header)."""
    start = f"GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n{extra}X-Pad: "
    return (start + "a" * (size - len(start) - 4) + "\r\n\r\n").encode()


async def test_a_head_over_the_limit_gets_431_and_never_reaches_the_app(server: tuple[_App, int]) -> None:
    app, port = server
    answer = await _exchange(port, _head(4097))
    assert _status(answer) == 431
    assert b"connection: close" in answer.lower()
    error = _body(answer)["error"]
    assert error["code"] == "request_header_too_large" and "server.max_head_bytes" in error["message"]
    assert app.calls == 0


async def test_a_head_of_exactly_the_limit_is_served(server: tuple[_App, int]) -> None:
    _, port = server
    answer = await _exchange(port, _head(4096))
    assert _status(answer) == 200 and answer.endswith(b"ok 0")


async def test_a_huge_header_sent_in_pieces_is_refused_after_the_limit(server: tuple[_App, int]) -> None:
    _, port = server
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /ok HTTP/1.1\r\nHost: t\r\nX-Big: ")
    for _ in range(8):
        writer.write(b"b" * 1000)
        await writer.drain()
        await asyncio.sleep(0.01)
    answer = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    assert _status(answer) == 431


async def test_a_body_in_the_same_read_as_a_head_near_the_limit_is_intact(server: tuple[_App, int]) -> None:
    """The bounded feed stops at the limit, then hands the rest (the body) on."""
    _, port = server
    body = b"x" * 20_000
    head = _head(4000, extra=f"Content-Length: {len(body)}\r\n").replace(b"GET", b"PUT", 1)
    answer = await _exchange(port, head + body)
    assert _status(answer) == 200 and answer.endswith(b"ok 20000")


async def test_pipelined_requests_in_one_read_are_each_answered(server: tuple[_App, int]) -> None:
    _, port = server
    one = b"GET /ok HTTP/1.1\r\nHost: t\r\n\r\n"
    last = b"GET /ok HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
    answer = await _exchange(port, one * 300 + last)  # 9 KiB: over the head limit in one read
    assert answer.count(b"HTTP/1.1 200") == 301


async def test_a_content_length_over_the_limit_gets_413_before_any_body_is_read(server: tuple[_App, int]) -> None:
    app, port = server
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"POST /ok HTTP/1.1\r\nHost: t\r\nContent-Length: 1099511627776\r\n\r\n")  # 1 TiB, no body
    await writer.drain()
    started = time.monotonic()
    answer = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    assert _status(answer) == 413 and time.monotonic() - started < 1.0
    assert _body(answer)["error"]["code"] == "request_too_large"
    assert app.calls == 0


async def test_a_content_length_at_the_limit_is_read(server: tuple[_App, int]) -> None:
    _, port = server
    body = b"y" * (1 << 20)
    answer = await _exchange(port, b"POST /ok HTTP/1.1\r\nHost: t\r\nConnection: close\r\n"
                                   b"Content-Length: %d\r\n\r\n" % len(body) + body)
    assert _status(answer) == 200 and answer.endswith(b"ok 1048576")


async def test_a_connection_that_sends_nothing_is_closed(server: tuple[_App, int]) -> None:
    _, port = server
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    started = time.monotonic()
    assert await asyncio.wait_for(reader.read(), 5) == b""
    writer.close()
    assert 0.4 < time.monotonic() - started < 2.0


async def test_a_head_that_does_not_finish_in_time_gets_408(server: tuple[_App, int]) -> None:
    app, port = server
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    started = time.monotonic()
    for part in (b"GET /ok HTTP/1.1\r\n", b"Host: t\r\n", b"X-Slow: 1\r\n", b"X-Slow: 2\r\n"):
        writer.write(part)  # a byte every 0.2 s resets no timer: the head has 0.5 s in all
        await writer.drain()
        await asyncio.sleep(0.2)
    answer = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    assert _status(answer) == 408 and "server.head_timeout" in _body(answer)["error"]["message"]
    assert time.monotonic() - started < 1.5 and app.calls == 0


async def test_an_idle_keep_alive_connection_is_closed_after_the_timeout(server: tuple[_App, int]) -> None:
    _, port = server
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /ok HTTP/1.1\r\nHost: t\r\n\r\n")
    await writer.drain()
    assert (await asyncio.wait_for(reader.readuntil(b"ok 0"), 5)).startswith(b"HTTP/1.1 200")
    started = time.monotonic()
    assert await asyncio.wait_for(reader.read(), 5) == b""
    writer.close()
    assert 0.4 < time.monotonic() - started < 2.0


async def test_the_tail_of_a_body_answered_early_does_not_hold_the_connection(server: tuple[_App, int]) -> None:
    # Found by tests/fuzz: the body's end, arriving after the answer, left the connection with
    # no keep-alive timer and out of the idle set: held open for good, and never evicted.
    _, port = server
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"POST /early HTTP/1.1\r\nHost: t\r\nContent-Length: 300000\r\n\r\n")
    await writer.drain()
    assert (await asyncio.wait_for(reader.readuntil(b"early"), 5)).startswith(b"HTTP/1.1 200")
    writer.write(b"x" * 300000)
    await writer.drain()
    started = time.monotonic()
    assert await asyncio.wait_for(reader.read(), 5) == b""
    writer.close()
    assert time.monotonic() - started < 2.0


async def test_at_the_cap_the_longest_idle_connection_makes_room(server: tuple[_App, int],
                                                                 limits: list[ConnectionLimits]) -> None:
    _, port = server
    cap = limits[0].max_connections
    idle = [await asyncio.open_connection("127.0.0.1", port) for _ in range(cap + 20)]
    await asyncio.sleep(0.1)
    assert protocol.open_connections() <= cap
    # The oldest 20 were closed to make room; the newest are still open.
    closed = [await asyncio.wait_for(reader.read(), 1) for reader, _ in idle[:20]]
    assert closed == [b""] * 20
    answer = await _exchange(port, b"GET /ok HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
    assert _status(answer) == 200
    for _, writer in idle:
        writer.close()


async def test_at_the_cap_with_every_connection_busy_a_newcomer_gets_503(server: tuple[_App, int],
                                                                        limits: list[ConnectionLimits]) -> None:
    app, port = server
    cap = limits[0].max_connections
    busy = []
    for _ in range(cap):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /hold HTTP/1.1\r\nHost: t\r\n\r\n")
        busy.append((reader, writer))
    for _ in range(cap):
        await asyncio.wait_for(app.arrivals.get(), 5)
    answer = await _exchange(port, b"GET /ok HTTP/1.1\r\nHost: t\r\n\r\n")
    assert _status(answer) == 503 and b"retry-after: 1" in answer.lower()
    assert _body(answer)["error"]["code"] == "too_many_connections"
    app.release.set()
    for reader, writer in busy:  # the busy ones were never cut
        assert (await asyncio.wait_for(reader.readuntil(b"ok 0"), 5)).startswith(b"HTTP/1.1 200")
        writer.close()


def test_the_cap_leaves_descriptors_for_upstream_connections_and_the_backlog() -> None:
    assert fd_budget(4096, 1 << 20) == (4096, 2048)
    connections, backlog = fd_budget(4096, 256)
    assert (connections, backlog) == (80, 32)
    assert 2 * connections + backlog + 64 <= 256
    assert fd_budget(4096, 1024) == (416, 128)
