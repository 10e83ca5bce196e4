"""Calling a gateway as a client does: one POST with the gateway key, usage for the mock to report;
or a raw socket that hangs up as soon as it has the event it waited for."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import aiohttp
import orjson

from tests.support.gateway import GatewayProcess

MESSAGES = {"model": "claude-sonnet-4-20250514", "max_tokens": 256,
            "messages": [{"role": "user", "content": "Hello!"}]}


def usage_header(**values: int) -> dict[str, str]:
    return {"X-Mock-Usage": orjson.dumps(values).decode()}


async def post(gw: GatewayProcess, path: str, body: dict | bytes, headers: dict[str, str] | None = None,
               *, key: str | None = None) -> tuple[aiohttp.ClientResponse, bytes]:
    all_headers = {"X-Majordomo-Key": key if key is not None else gw.key, "Content-Type": "application/json"}
    all_headers.update(headers or {})
    data = body if isinstance(body, bytes) else orjson.dumps(body)
    async with aiohttp.ClientSession(auto_decompress=False) as session, \
            session.post(gw.url + path, data=data, headers=all_headers) as response:
        return response, await response.read()


@dataclass
class RawRead:
    """What a raw HTTP/1.1 client had received when it hung up."""

    status: int
    headers: dict[str, str]
    #: the response body as far as it came, chunked encoding undone
    body: bytes
    #: whether the body's end (the chunked encoding's last chunk) had arrived
    complete: bool

    @property
    def request_id(self) -> str:
        return self.headers["x-majordomo-request-id"]


def _event_done(body: bytes, marker: bytes) -> bool:
    """``marker`` is in ``body`` and the SSE event holding it has ended (its blank line came)."""
    at = body.find(marker)
    if at < 0:
        return False
    rest = body[at:]
    return b"\n\n" in rest or b"\r\n\r\n" in rest


async def read_until_and_close(gw: GatewayProcess, path: str, body: dict | bytes, headers: dict[str, str],
                               until: bytes, *, timeout: float = 15.0) -> RawRead:
    """POST a streamed request on a plain socket, read until the SSE event holding ``until`` has
    arrived whole, and close the connection at once: what an SDK does when it stops at a stream's
    terminal event, without waiting for the end of the body."""
    data = body if isinstance(body, bytes) else orjson.dumps(body)
    head_lines = [f"POST {path} HTTP/1.1", "Host: 127.0.0.1", f"X-Majordomo-Key: {gw.key}",
                  "Content-Type: application/json", f"Content-Length: {len(data)}"]
    head_lines += [f"{name}: {value}" for name, value in headers.items()]
    reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
    try:
        writer.write(("\r\n".join(head_lines) + "\r\n\r\n").encode() + data)
        await writer.drain()
        async with asyncio.timeout(timeout):
            head = await reader.readuntil(b"\r\n\r\n")
            status_line, *header_lines = head.decode("latin-1").split("\r\n")
            status = int(status_line.split(" ")[1])
            response_headers = {}
            for line in header_lines:
                if line:
                    name, _, value = line.partition(":")
                    response_headers[name.strip().lower()] = value.strip()
            assert response_headers.get("transfer-encoding") == "chunked", response_headers
            received = b""
            while not _event_done(received, until):
                size = int((await reader.readuntil(b"\r\n")).strip().split(b";")[0], 16)
                if size == 0:
                    return RawRead(status, response_headers, received, complete=True)
                received += (await reader.readexactly(size + 2))[:-2]
            return RawRead(status, response_headers, received, complete=False)
    finally:
        writer.close()
