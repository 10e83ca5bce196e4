"""What proxy/server_glue.py relies on, checked against the installed uvicorn on a real socket.

When one of these fails after a uvicorn upgrade, the relay's eager path or the log filter no
longer does what it says: read proxy/server_glue.py's docstring and adapt the module.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import AsyncIterator, MutableMapping
from typing import Any

import pytest
import uvicorn
from majordomo_gateway.proxy.server_glue import (
    INCOMPLETE_RESPONSE_MESSAGE,
    SERVER_ERROR_LOGGER,
    DroppedOnPurpose,
    drop_on_purpose,
    send_now,
    still_connected,
)

Scope = MutableMapping[str, Any]


class _App:
    """/eager: sends its body through send_now; /unfinished and /dropped: start, then return;
    /gone: sends, waits for the client to leave, sends again, saying each time whether it was written."""

    def __init__(self) -> None:
        self.send_now_results: list[object] = []
        self.connected: list[bool] = []

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        await receive()
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/plain")]})
        if scope["path"] == "/eager":
            self.send_now_results.append(send_now(send, {"type": "http.response.body", "body": b"one ",
                                                         "more_body": True}))
            self.send_now_results.append(send_now(send, {"type": "http.response.body", "body": b"two",
                                                         "more_body": False}))
            return
        if scope["path"] == "/gone":
            connected = still_connected(send)
            await send({"type": "http.response.body", "body": b"first\n", "more_body": True})
            self.connected.append(connected())
            assert (await receive())["type"] == "http.disconnect"
            await send({"type": "http.response.body", "body": b"second\n", "more_body": True})
            self.connected.append(connected())
            return
        await send({"type": "http.response.body", "body": b"partial", "more_body": True})
        if scope["path"] == "/dropped":
            drop_on_purpose()


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
async def server() -> AsyncIterator[tuple[_App, int]]:
    app = _App()
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    # The production server stack: httptools (uvloop changes the loop, not the protocol).
    config = uvicorn.Config(app, http="httptools", lifespan="off", log_config=None, access_log=False)
    running = uvicorn.Server(config)
    task = asyncio.get_running_loop().create_task(running.serve(sockets=[sock]))
    while not running.started:
        await asyncio.sleep(0.01)
        assert not task.done(), "uvicorn did not start"
    try:
        yield app, port
    finally:
        running.should_exit = True
        await asyncio.wait_for(task, 10)
        sock.close()


async def _get(port: int, path: str) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n".encode())
    await writer.drain()
    try:
        return await asyncio.wait_for(reader.read(), 10)  # until the server closes the connection
    finally:
        writer.close()


async def test_send_on_an_unpaused_transport_completes_without_suspending(server: tuple[_App, int]) -> None:
    app, port = server
    answer = await _get(port, "/eager")
    assert app.send_now_results == [None, None], (
        "uvicorn's send() suspended on an unpaused transport: the relay's eager path now costs a task per "
        "chunk (see proxy/server_glue.py, point 1)")
    assert answer.startswith(b"HTTP/1.1 200") and b"one " in answer and answer.rstrip().endswith(b"0")


def _incomplete(handler: _Records) -> list[logging.LogRecord]:
    return [r for r in handler.records if r.getMessage().startswith(INCOMPLETE_RESPONSE_MESSAGE)]


async def test_uvicorn_logs_the_message_the_filter_matches(server: tuple[_App, int]) -> None:
    _, port = server
    handler = _Records()
    logger = logging.getLogger(SERVER_ERROR_LOGGER)
    logger.addHandler(handler)
    try:
        answer = await _get(port, "/unfinished")
        await asyncio.sleep(0.05)
    finally:
        logger.removeHandler(handler)
    assert answer.startswith(b"HTTP/1.1 200") and b"partial" in answer
    found = _incomplete(handler)
    assert found, ("uvicorn no longer logs a line starting with "
                   f"{INCOMPLETE_RESPONSE_MESSAGE!r} on {SERVER_ERROR_LOGGER!r} for an unfinished response; it "
                   f"logged: {[(r.name, r.getMessage()) for r in handler.records]} (see proxy/server_glue.py, point 2)")
    assert found[0].name == SERVER_ERROR_LOGGER and found[0].levelno == logging.ERROR


async def test_the_filter_hides_only_responses_dropped_on_purpose(server: tuple[_App, int]) -> None:
    _, port = server
    handler = _Records()
    logger = logging.getLogger(SERVER_ERROR_LOGGER)
    glue_filter = DroppedOnPurpose()
    logger.addHandler(handler)
    logger.addFilter(glue_filter)
    try:
        await _get(port, "/dropped")
        await asyncio.sleep(0.05)
        assert _incomplete(handler) == [], "the on-purpose line got through (proxy/server_glue.py, point 3)"
        await _get(port, "/unfinished")
        await asyncio.sleep(0.05)
        assert len(_incomplete(handler)) == 1, "the filter also hid a response that was not dropped on purpose"
    finally:
        logger.removeFilter(glue_filter)
        logger.removeHandler(handler)


async def test_still_connected_tells_a_written_send_from_one_after_the_client_left(
        server: tuple[_App, int]) -> None:
    app, port = server
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /gone HTTP/1.1\r\nHost: test\r\n\r\n")
    await writer.drain()
    received = b""
    while b"first" not in received:
        received += await asyncio.wait_for(reader.read(4096), 10)
    writer.close()
    for _ in range(200):
        if len(app.connected) == 2:
            break
        await asyncio.sleep(0.01)
    assert app.connected == [True, False], (
        "uvicorn's send() no longer shows (through its cycle's `disconnected`) whether it wrote to the client: "
        "the relay cannot tell a stream's terminal event sent from one lost (proxy/server_glue.py, point 4)")


def test_still_connected_without_a_server_that_says_counts_every_send() -> None:
    async def send(message: MutableMapping[str, Any]) -> None:
        return None

    assert still_connected(send)() is True
