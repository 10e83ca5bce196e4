"""Request framing from a raw socket client against a real gateway (issue 18, points 10 and 11).

- A client that hangs up before its body is complete sends nothing upstream: what arrived is not
  the request it meant.  Its row has status 499, ``aborted``, no model and no tokens.
- A chunked body's trailer fields are not headers: they cannot add or replace metadata, cannot
  carry the Majordomo key, and are not forwarded upstream (uvicorn appends them to the request's
  headers; server/protocol.py drops them).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import orjson
import pytest

from tests.support import GatewayProcess
from tests.support.upstream import MockUpstream

CHAT_PATH = "/v1/chat/completions"


@pytest.fixture(scope="module")
async def gw(mock_upstream: MockUpstream, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[GatewayProcess]:
    workdir = tmp_path_factory.mktemp("framing")
    process = GatewayProcess(database_url=f"sqlite:///{workdir / 'm.db'}", upstream_url=mock_upstream.url,
                             workdir=workdir).start()
    yield process
    process.stop()


def _chat_body(probe: str) -> bytes:
    return orjson.dumps({"model": "gpt-4.1", "messages": [{"role": "user", "content": f"probe {probe} " + "x" * 400}]})


def _head(gw: GatewayProcess, probe: str, *framing: str) -> bytes:
    lines = [f"POST {CHAT_PATH} HTTP/1.1", "Host: 127.0.0.1", f"X-Majordomo-Key: {gw.key}",
             f"X-Majordomo-Probe: {probe}", "Content-Type: application/json", *framing]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def _rows_for(gw: GatewayProcess, probe: str, *, timeout: float = 5.0) -> list[dict]:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        ids = await gw.query("SELECT id FROM llm_requests WHERE raw_metadata LIKE ?", f"%{probe}%")
        if ids or loop.time() > deadline:
            return [await gw.row(str(i)) for (i,) in ids]
        await asyncio.sleep(0.05)


def _arrivals(mock: MockUpstream, probe: str) -> int:
    return sum(1 for r in mock.requests if probe.encode() in r.body)


@pytest.mark.parametrize("pause", [0.3, 0.0], ids=["gateway-waiting-for-the-rest", "all-at-once"])
@pytest.mark.parametrize("framing", ["content-length", "chunked"])
async def test_a_body_cut_short_by_a_hang_up_is_not_forwarded(gw: GatewayProcess, mock_upstream: MockUpstream,
                                                              framing: str, pause: float) -> None:
    probe = uuid.uuid4().hex
    body = _chat_body(probe)
    half = body[: len(body) // 2]
    if framing == "content-length":
        data = _head(gw, probe, f"Content-Length: {len(body)}") + half
    else:  # one chunk of the body, never the terminating zero-length chunk
        data = _head(gw, probe, "Transfer-Encoding: chunked") + f"{len(half):x}\r\n".encode() + half + b"\r\n"
    _, writer = await asyncio.open_connection("127.0.0.1", gw.port)
    head_end = data.index(b"\r\n\r\n") + 4
    writer.write(data[:head_end] if pause else data)
    await writer.drain()
    if pause:
        await asyncio.sleep(pause)  # the gateway has the head and waits in read_body
        writer.write(data[head_end:])
        await writer.drain()
        await asyncio.sleep(0.05)
    writer.close()
    await writer.wait_closed()

    rows = await _rows_for(gw, probe)
    await asyncio.sleep(0.3)  # anything forwarded would have reached the upstream by now
    assert _arrivals(mock_upstream, probe) == 0
    assert len(rows) == 1, rows
    row = rows[0]
    assert row["status_code"] == 499 and row["aborted"] is True, row
    assert row["model"] is None and row["input_tokens"] == 0 and row["usage_source"] == "none", row
    assert "not forwarded" in row["error_message"], row
    assert row["raw_metadata"] == {"Probe": probe}


async def test_a_complete_body_still_goes_upstream(gw: GatewayProcess, mock_upstream: MockUpstream) -> None:
    """The same raw client, body complete: the cut-short tests above would pass on a gateway that
    forwarded nothing at all."""
    probe = uuid.uuid4().hex
    body = _chat_body(probe)
    reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
    chunked = f"{len(body):x}\r\n".encode() + body + b"\r\n0\r\n\r\n"
    writer.write(_head(gw, probe, "Transfer-Encoding: chunked") + chunked)
    await writer.drain()
    status_line = await asyncio.wait_for(reader.readuntil(b"\r\n"), 10)
    writer.close()
    assert status_line.startswith(b"HTTP/1.1 200"), status_line
    assert _arrivals(mock_upstream, probe) == 1
    rows = await _rows_for(gw, probe)
    assert rows and rows[0]["status_code"] == 200


def _chunked_with_trailers(body: bytes, trailers: list[str]) -> bytes:
    return (f"{len(body):x}\r\n".encode() + body + b"\r\n0\r\n"
            + "".join(f"{t}\r\n" for t in trailers).encode() + b"\r\n")


async def _send_and_read_status(gw: GatewayProcess, head: bytes, body: bytes, *, pause: float) -> int:
    reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
    try:
        if pause:  # the gateway has started the request when the body and trailers come
            writer.write(head)
            await writer.drain()
            await asyncio.sleep(pause)
            writer.write(body)
        else:  # all in one read: uvicorn parses the trailers before the app has looked at the headers
            writer.write(head + body)
        await writer.drain()
        status_line = await asyncio.wait_for(reader.readuntil(b"\r\n"), 10)
        return int(status_line.split(b" ")[1])
    finally:
        writer.close()


@pytest.mark.parametrize("pause", [0.0, 0.2], ids=["one-read", "trailers-later"])
async def test_trailers_are_not_headers(gw: GatewayProcess, mock_upstream: MockUpstream, pause: float) -> None:
    probe = uuid.uuid4().hex
    trailers = ["X-Majordomo-Probe: from-the-trailer", "X-Majordomo-Feature: from-the-trailer",
                "X-Trailer-Probe: forwarded?", "Authorization: Bearer sk-trailer"]
    body = _chunked_with_trailers(_chat_body(probe), trailers)
    head = _head(gw, probe, "Transfer-Encoding: chunked", "Trailer: X-Trailer-Probe")
    status = await _send_and_read_status(gw, head, body, pause=pause)
    assert status == 200
    (arrived,) = [r for r in mock_upstream.requests if probe.encode() in r.body]
    assert "x-trailer-probe" not in arrived.headers and "sk-trailer" not in str(arrived.headers), arrived.headers
    (row,) = await _rows_for(gw, probe)
    assert row["raw_metadata"] == {"Probe": probe}, row["raw_metadata"]


@pytest.mark.parametrize("pause", [0.0, 0.2], ids=["one-read", "trailers-later"])
async def test_a_trailer_cannot_carry_the_majordomo_key(gw: GatewayProcess, mock_upstream: MockUpstream,
                                                       pause: float) -> None:
    probe = uuid.uuid4().hex
    head = _head(gw, probe, "Transfer-Encoding: chunked").replace(f"X-Majordomo-Key: {gw.key}\r\n".encode(), b"")
    body = _chunked_with_trailers(_chat_body(probe), [f"X-Majordomo-Key: {gw.key}"])
    assert await _send_and_read_status(gw, head, body, pause=pause) == 401
    assert _arrivals(mock_upstream, probe) == 0
