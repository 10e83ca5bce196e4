"""The upstream HTTP/1.1 client (proxy/upstream.py) against real sockets on 127.0.0.1.

Each test runs a small scripted server: it records the raw request bytes and answers with exact
bytes, so framing (chunked, Content-Length, until-close, HEAD, 1xx), reuse, stale connections,
timeouts, backpressure and TLS are checked at the wire, not through another HTTP library.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import Awaitable, Callable

import pytest
import trustme
from majordomo_gateway.proxy.upstream import (
    Origin,
    UpstreamBroken,
    UpstreamClient,
    UpstreamConnectError,
    UpstreamTimeout,
)

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter, "ScriptedServer"], Awaitable[None]]


class ScriptedServer:
    def __init__(self, handler: Handler, ssl_context: ssl.SSLContext | None = None) -> None:
        self.handler = handler
        self.ssl_context = ssl_context
        self.connections = 0
        self.port = 0
        self.requests: list[bytes] = []
        self.server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> ScriptedServer:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self.ssl_context)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def origin(self, base_path: str = "") -> Origin:
        scheme = "https" if self.ssl_context else "http"
        return Origin.from_url(f"{scheme}://127.0.0.1:{self.port}{base_path}")

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await self.handler(reader, writer, self)
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    async def read_request(self, reader: asyncio.StreamReader) -> bytes:
        head = await reader.readuntil(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":", 1)[1])
        body = await reader.readexactly(length) if length else b""
        self.requests.append(head + body)
        return head + body


def _client(**kwargs: float) -> UpstreamClient:
    return UpstreamClient(connect_timeout=kwargs.get("connect_timeout", 2.0),
                          read_timeout=kwargs.get("read_timeout", 5.0))


async def _keep_alive_json(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, srv: ScriptedServer) -> None:
    while True:
        await srv.read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 12\r\n\r\n{\"ok\": true}")
        await writer.drain()


async def test_request_bytes_are_exactly_what_the_relay_asked_for() -> None:
    async with ScriptedServer(_keep_alive_json) as srv:
        client = _client()
        headers = [("Authorization", "Bearer sk-test"), ("X-Custom", "a;b=c"), ("content-type", "application/json")]
        response = await client.request(srv.origin("/v1beta/openai"), "POST", b"/chat/completions?x=1&y=%2F",
                                        headers, b'{"model":"m"}')
        assert response.status == 200
        assert await response.read() == b'{"ok": true}'
        response.release()
        await client.close()
    assert srv.requests == [
        b"POST /v1beta/openai/chat/completions?x=1&y=%2F HTTP/1.1\r\n"
        + f"Host: 127.0.0.1:{srv.port}\r\n".encode()
        + b"Authorization: Bearer sk-test\r\nX-Custom: a;b=c\r\ncontent-type: application/json\r\n"
        b"Content-Length: 13\r\n\r\n{\"model\":\"m\"}"
    ]


async def test_get_without_body_sends_no_content_length_and_default_port_is_not_in_host() -> None:
    assert Origin.from_url("https://api.openai.com").host_header == b"api.openai.com"
    assert Origin.from_url("https://api.openai.com:8443/x/").host_header == b"api.openai.com:8443"
    assert Origin.from_url("https://api.openai.com:8443/x/").base_path == b"/x"
    assert Origin.from_url("http://[::1]:9000").host_header == b"[::1]:9000"
    async with ScriptedServer(_keep_alive_json) as srv:
        client = _client()
        response = await client.request(srv.origin(), "GET", b"/v1/models", [], b"")
        await response.read()
        response.release()
        await client.close()
    assert b"content-length" not in srv.requests[0].lower()
    assert srv.requests[0].startswith(b"GET /v1/models HTTP/1.1\r\n")


async def test_keep_alive_connections_are_reused() -> None:
    async with ScriptedServer(_keep_alive_json) as srv:
        client = _client()
        for _ in range(5):
            response = await client.request(srv.origin(), "POST", b"/v1/x", [], b"{}")
            assert await response.read() == b'{"ok": true}'
            response.release()
        assert srv.connections == 1
        assert client.idle_count() == 1
        await client.close()


async def test_a_response_not_read_to_its_end_closes_its_connection() -> None:
    async with ScriptedServer(_keep_alive_json) as srv:
        client = _client()
        response = await client.request(srv.origin(), "POST", b"/v1/x", [], b"{}")
        response.release()  # body never read: the connection cannot carry another request
        response = await client.request(srv.origin(), "POST", b"/v1/x", [], b"{}")
        assert await response.read() == b'{"ok": true}'
        response.release()
        assert srv.connections == 2
        await client.close()


async def test_a_pooled_connection_the_server_dropped_is_retried_on_a_new_one() -> None:
    async def one_request_then_close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                                     srv: ScriptedServer) -> None:
        await srv.read_request(reader)
        # Claims keep-alive, then closes as servers do with idle connections.
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()
        await asyncio.sleep(0.05)

    async with ScriptedServer(one_request_then_close) as srv:
        client = _client()
        first = await client.request(srv.origin(), "POST", b"/v1/x", [], b"{}")
        assert await first.read() == b"ok"
        first.release()
        await asyncio.sleep(0.2)  # the server has closed the pooled connection by now
        second = await client.request(srv.origin(), "POST", b"/v1/x", [], b"{}")
        assert await second.read() == b"ok"
        second.release()
        assert srv.connections == 2
        await client.close()


async def _answer_once_then_read_and_close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                                           srv: ScriptedServer) -> None:
    """The first connection answers one request with keep-alive, then reads the next and closes
    without a word (a server that crashed, or dropped the connection as the request came in);
    later connections answer normally."""
    first_connection = srv.connections == 1
    await srv.read_request(reader)
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
    await writer.drain()
    if first_connection:
        await srv.read_request(reader)
        writer.transport.abort()
        return
    await asyncio.sleep(1)


async def test_a_post_is_never_sent_twice_when_a_reused_connection_breaks() -> None:
    """Issue 18, point 12: the upstream read the POST (and may have billed it), then closed: the
    client gets the error, the upstream saw the request once."""
    async with ScriptedServer(_answer_once_then_read_and_close) as srv:
        client = _client()
        first = await client.request(srv.origin(), "POST", b"/v1/x", [], b'{"n": 1}')
        assert await first.read() == b"ok"
        first.release()
        with pytest.raises(UpstreamBroken):
            await client.request(srv.origin(), "POST", b"/v1/x", [], b'{"n": 2}')
        await asyncio.sleep(0.1)  # a retry, were there one, would have arrived by now
        await client.close()
    assert [r.endswith(b'{"n": 2}') for r in srv.requests] == [False, True]
    assert srv.connections == 1


async def test_an_idempotent_request_is_retried_once_when_a_reused_connection_breaks() -> None:
    async with ScriptedServer(_answer_once_then_read_and_close) as srv:
        client = _client()
        first = await client.request(srv.origin(), "GET", b"/v1/models", [], b"")
        assert await first.read() == b"ok"
        first.release()
        second = await client.request(srv.origin(), "GET", b"/v1/models", [], b"")
        assert await second.read() == b"ok"
        second.release()
        await client.close()
    assert len(srv.requests) == 3 and srv.connections == 2


async def test_idle_connections_older_than_the_keepalive_limit_are_not_reused() -> None:
    async with ScriptedServer(_keep_alive_json) as srv:
        client = UpstreamClient(connect_timeout=2, read_timeout=5, keepalive_seconds=0.05)
        for _ in range(2):
            response = await client.request(srv.origin(), "POST", b"/v1/x", [], b"{}")
            await response.read()
            response.release()
            await asyncio.sleep(0.1)
        assert srv.connections == 2
        await client.close()


async def test_chunked_stream_arrives_chunk_by_chunk_and_ends_cleanly() -> None:
    release = asyncio.Event()

    async def sse(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, srv: ScriptedServer) -> None:
        await srv.read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
                     b"7\r\ndata: 1\r\n")
        await writer.drain()
        await release.wait()
        writer.write(b"7\r\ndata: 2\r\n0\r\n\r\n")
        await writer.drain()
        await reader.read()

    async with ScriptedServer(sse) as srv:
        client = _client()
        response = await client.request(srv.origin(), "POST", b"/v1/x", [], b"{}")
        assert response.header(b"content-type") == b"text/event-stream"
        assert response.content_length is None
        assert await response.readany() == b"data: 1"  # before the rest exists: nothing is buffered
        release.set()
        rest = b""
        while chunk := await response.readany():
            rest += chunk
        assert rest == b"data: 2"
        assert response.at_eof
        response.release()
        assert client.idle_count() == 1
        await client.close()


async def test_a_stream_cut_before_its_last_chunk_is_broken_not_finished() -> None:
    async def cut(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, srv: ScriptedServer) -> None:
        await srv.read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n7\r\ndata: 1\r\n")
        await writer.drain()

    async with ScriptedServer(cut) as srv:
        client = _client()
        response = await client.request(srv.origin(), "POST", b"/v1/x", [], b"{}")
        assert await response.readany() == b"data: 1"
        with pytest.raises(UpstreamBroken):
            await response.readany()
        response.release()
        assert client.idle_count() == 0
        await client.close()


async def test_a_body_shorter_than_its_content_length_is_broken() -> None:
    async def short(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, srv: ScriptedServer) -> None:
        await srv.read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{\"partial\"")

    async with ScriptedServer(short) as srv:
        client = _client()
        response = await client.request(srv.origin(), "POST", b"/v1/x", [], b"{}")
        with pytest.raises(UpstreamBroken):
            await response.read()
        response.release()
        await client.close()


async def test_a_body_delimited_by_connection_close_is_complete_at_close() -> None:
    async def until_close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, srv: ScriptedServer) -> None:
        await srv.read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nall of it")
        await writer.drain()

    async with ScriptedServer(until_close) as srv:
        client = _client()
        response = await client.request(srv.origin(), "POST", b"/v1/x", [], b"{}")
        assert await response.read() == b"all of it"
        response.release()
        assert client.idle_count() == 0
        await client.close()


async def test_head_answers_and_interim_1xx_responses() -> None:
    async def head_then_continue(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                                 srv: ScriptedServer) -> None:
        await srv.read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n")  # HEAD: no body follows
        await writer.drain()
        await reader.read()

    async def continue_first(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, srv: ScriptedServer) -> None:
        await srv.read_request(reader)
        writer.write(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()
        await reader.read()

    client = _client(read_timeout=1.0)
    async with ScriptedServer(head_then_continue) as srv:
        response = await client.request(srv.origin(), "HEAD", b"/v1/x", [], b"")
        assert (response.status, response.content_length) == (200, 1234)
        assert await response.read() == b""
        response.release()
    async with ScriptedServer(continue_first) as srv:
        response = await client.request(srv.origin(), "POST", b"/v1/x", [], b"{}")
        assert response.status == 201
        assert response.raw_headers == [(b"Content-Length", b"2")]
        assert await response.read() == b"ok"
        response.release()
    await client.close()


async def test_read_timeout_is_the_gap_between_reads_not_the_total() -> None:
    async def slow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, srv: ScriptedServer) -> None:
        await srv.read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        for _ in range(6):  # 0.6 s in all, never 0.3 s without a byte
            await asyncio.sleep(0.1)
            writer.write(b"1\r\nx\r\n")
            await writer.drain()
        await asyncio.sleep(2)  # then silence

    async with ScriptedServer(slow) as srv:
        client = _client(read_timeout=0.3)
        response = await client.request(srv.origin(), "POST", b"/v1/x", [], b"{}")
        received = b""
        with pytest.raises(UpstreamTimeout):
            while True:
                received += await response.readany()
        assert received == b"x" * 6
        response.release()
        await client.close()


async def test_no_response_head_in_time_is_a_timeout() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, srv: ScriptedServer) -> None:
        await srv.read_request(reader)
        await asyncio.sleep(2)

    async with ScriptedServer(silent) as srv:
        client = _client(read_timeout=0.2)
        with pytest.raises(UpstreamTimeout):
            await client.request(srv.origin(), "POST", b"/v1/x", [], b"{}")
        await client.close()


async def test_connection_refused_and_malformed_answers() -> None:
    client = _client()
    with pytest.raises(UpstreamConnectError, match=r"127\.0\.0\.1:9"):
        await client.request(Origin.from_url("http://127.0.0.1:9"), "POST", b"/v1/x", [], b"{}")

    async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, srv: ScriptedServer) -> None:
        await srv.read_request(reader)
        writer.write(b"SSH-2.0-OpenSSH_9.2\r\n\r\n")
        await writer.drain()
        await reader.read()

    async with ScriptedServer(garbage) as srv:
        with pytest.raises(UpstreamBroken, match="malformed"):
            await client.request(srv.origin(), "POST", b"/v1/x", [], b"{}")
    await client.close()


async def test_a_reader_that_stops_taking_bytes_pauses_the_upstream() -> None:
    total = 8 * 1024 * 1024
    sent = 0

    async def firehose(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, srv: ScriptedServer) -> None:
        nonlocal sent
        await srv.read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % total)
        block = b"x" * 65536
        while sent < total:
            writer.write(block)
            sent += len(block)
            await writer.drain()

    async with ScriptedServer(firehose) as srv:
        client = _client()
        response = await client.request(srv.origin(), "POST", b"/v1/x", [], b"{}")
        await asyncio.sleep(0.5)  # the relay is stuck on a slow client
        # Socket buffers hold a few MB at most; the server must be blocked well before the end.
        assert sent < total
        assert response._buffered < 1024 * 1024
        received = 0
        while chunk := await response.readany():
            received += len(chunk)
        assert received == total
        response.release()
        await client.close()


@pytest.fixture(scope="module")
def tls_ca() -> trustme.CA:
    return trustme.CA()


async def test_https_upstream_is_verified_against_the_trust_store(tls_ca: trustme.CA) -> None:
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls_ca.issue_cert("127.0.0.1").configure_cert(server_context)
    async with ScriptedServer(_keep_alive_json, ssl_context=server_context) as srv:
        trusting = ssl.create_default_context()
        tls_ca.configure_trust(trusting)
        client = UpstreamClient(connect_timeout=2, read_timeout=5, ssl_context=trusting)
        for _ in range(2):
            response = await client.request(srv.origin(), "POST", b"/v1/x", [("Authorization", "Bearer k")], b"{}")
            assert await response.read() == b'{"ok": true}'
            response.release()
        assert srv.connections == 1
        await client.close()

        untrusting = UpstreamClient(connect_timeout=2, read_timeout=5)  # system store: does not know this CA
        with pytest.raises(UpstreamConnectError, match="SSL"):
            await untrusting.request(srv.origin(), "POST", b"/v1/x", [("Authorization", "Bearer k")], b"{}")
        await untrusting.close()


async def test_new_connections_share_one_name_lookup_and_fall_back_across_addresses(monkeypatch) -> None:
    from majordomo_gateway.proxy import upstream as upstream_module

    loop = asyncio.get_running_loop()
    real_getaddrinfo = loop.getaddrinfo
    lookups: list[str] = []

    async def counting_getaddrinfo(host, port, **kwargs):  # type: ignore[no-untyped-def]
        lookups.append(host)
        infos = await real_getaddrinfo(host, port, **kwargs)
        # An unreachable address first, as a dual-stack name can give: the next one must be tried.
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.2", 9)), *infos]

    monkeypatch.setattr(loop, "getaddrinfo", counting_getaddrinfo)
    monkeypatch.setattr(upstream_module, "DNS_TTL_SECONDS", 0.0)  # every answer expires at once

    async with ScriptedServer(_keep_alive_json) as srv:
        client = _client()
        origin = Origin.from_url(f"http://localhost:{srv.port}")
        # Three requests at once on an empty pool: three new connections.
        for response in await asyncio.gather(*(client.request(origin, "POST", b"/v1/x", [], b"{}") for _ in range(3))):
            assert await response.read() == b'{"ok": true}'
            response.release()
        assert srv.connections == 3
        assert lookups == ["localhost"]  # one lookup for all three
        response = await client.request(origin, "POST", b"/v1/x", [], b"{}")  # a pooled connection: no lookup
        await response.read()
        response.release()
        assert lookups == ["localhost"]
        for response in await asyncio.gather(*(client.request(origin, "POST", b"/v1/x", [], b"{}") for _ in range(4))):
            await response.read()
            response.release()
        assert srv.connections == 4  # three reused, one new: its lookup had expired
        assert lookups == ["localhost", "localhost"]
        await client.close()
