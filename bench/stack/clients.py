"""Upstream HTTP clients for the stack benchmark, behind one tiny interface.

    client = make_client("aiohttp" | "httpx" | "raw")
    resp = await client.send(method, port, path, headers, body)
        headers: iterable of (name, value) pairs, str or bytes, already lower-case
    resp.status: int
    resp.raw_headers: list[(bytes, bytes)]   hop-by-hop headers removed
    resp.is_stream: bool                      content-type is text/event-stream or body is chunked
    await resp.read() -> bytes                whole body (non-streaming)
    async for chunk in resp.chunks()          body as it arrives (streaming)
    await resp.close()                        release (keep-alive) or drop the connection

Every client keeps a keep-alive pool to 127.0.0.1 and does not decompress bodies.
"""

from __future__ import annotations

import asyncio
import collections

HOP_REQ_B = frozenset(
    {
        b"host",
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"transfer-encoding",
        b"content-length",
        b"te",
        b"trailer",
        b"upgrade",
    }
)
HOP_REQ_S = frozenset(h.decode() for h in HOP_REQ_B)
HOP_RESP_B = frozenset(
    {b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"content-length", b"trailer"}
)
HOP_RESP_S = frozenset(h.decode() for h in HOP_RESP_B)
HOST = "127.0.0.1"


def req_headers_str(headers) -> list[tuple[str, str]]:
    out = []
    for k, v in headers:
        if isinstance(k, bytes):
            k = k.decode("latin-1")
            v = v.decode("latin-1")
        k = k.lower()  # aiohttp.web's raw_headers keep the client's case
        if k not in HOP_REQ_S:
            out.append((k, v))
    return out


def req_headers_bytes(headers) -> list[tuple[bytes, bytes]]:
    out = []
    for k, v in headers:
        if isinstance(k, str):
            k = k.encode("latin-1")
            v = v.encode("latin-1")
        k = k.lower()  # aiohttp.web's raw_headers keep the client's case
        if k not in HOP_REQ_B:
            out.append((k, v))
    return out


def resp_headers_bytes(raw) -> list[tuple[bytes, bytes]]:
    return [(k.lower(), v) for k, v in raw if k.lower() not in HOP_RESP_B]


def _is_stream(ctype: bytes | None) -> bool:
    return ctype is not None and ctype.startswith(b"text/event-stream")


# --------------------------------------------------------------------------- aiohttp


class AiohttpResp:
    __slots__ = ("_r", "is_stream", "raw_headers", "status")

    def __init__(self, r):
        self._r = r
        self.status = r.status
        self.raw_headers = resp_headers_bytes(r.raw_headers)
        self.is_stream = _is_stream(r.headers.get("content-type", "").encode()) or r.content_length is None

    async def read(self) -> bytes:
        return await self._r.read()

    async def chunks(self):
        content = self._r.content
        while True:
            data = await content.readany()
            if not data:
                # readany() returns b"" at EOF; a truncated body raises ClientPayloadError instead.
                return
            yield data

    async def close(self):
        self._r.release()


class AiohttpClient:
    name = "aiohttp"

    def __init__(self):
        import aiohttp

        self._aiohttp = aiohttp
        self.session = None

    def _ensure(self):
        aiohttp = self._aiohttp
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=256, limit_per_host=256, keepalive_timeout=60, ttl_dns_cache=None),
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=300),
            auto_decompress=False,
            skip_auto_headers=("User-Agent", "Accept-Encoding", "Accept"),
        )
        self._urls = {}

    async def send(self, method, port, path, headers, body):
        if self.session is None:
            self._ensure()
        url = f"http://{HOST}:{port}{path}"
        r = await self.session.request(method, url, headers=req_headers_str(headers), data=body)
        return AiohttpResp(r)

    async def aclose(self):
        if self.session is not None:
            await self.session.close()


# --------------------------------------------------------------------------- httpx


class HttpxResp:
    __slots__ = ("_r", "is_stream", "raw_headers", "status")

    def __init__(self, r):
        self._r = r
        self.status = r.status_code
        self.raw_headers = resp_headers_bytes(r.headers.raw)
        ct = r.headers.get("content-type")
        self.is_stream = _is_stream(ct.encode() if ct else None) or "content-length" not in r.headers

    async def read(self) -> bytes:
        return b"".join([c async for c in self._r.aiter_raw()])

    async def chunks(self):
        async for c in self._r.aiter_raw():
            yield c

    async def close(self):
        await self._r.aclose()


class HttpxClient:
    name = "httpx"

    def __init__(self):
        self.client = None

    async def send(self, method, port, path, headers, body):
        if self.client is None:
            import httpx

            self.client = httpx.AsyncClient(
                limits=httpx.Limits(max_connections=256, max_keepalive_connections=256, keepalive_expiry=60),
                timeout=httpx.Timeout(connect=10, read=300, write=30, pool=10),
                http1=True,
                http2=False,
                trust_env=False,
            )
        c = self.client
        req = c.build_request(method, f"http://{HOST}:{port}{path}", headers=req_headers_bytes(headers), content=body)
        r = await c.send(req, stream=True)
        return HttpxResp(r)

    async def aclose(self):
        if self.client is not None:
            await self.client.aclose()


# --------------------------------------------------------------------------- raw asyncio + httptools


class UpstreamBroken(Exception):
    pass


class RawConn(asyncio.Protocol):
    """One keep-alive connection; one request at a time."""

    __slots__ = (
        "_buf",
        "_done",
        "_exc",
        "_head",
        "_paused",
        "_wait",
        "closed",
        "headers",
        "is_stream",
        "parser",
        "status",
        "transport",
    )

    def __init__(self):
        import httptools

        self.parser = httptools.HttpResponseParser(self)
        self.transport = None
        self.closed = False
        self._reset()

    def _reset(self):
        self.headers = []
        self.status = 0
        self.is_stream = False
        self._buf = collections.deque()
        self._done = False
        self._exc = None
        self._head = asyncio.get_running_loop().create_future()
        self._wait = None
        self._paused = False

    # asyncio.Protocol
    def connection_made(self, transport):
        self.transport = transport

    def connection_lost(self, exc):
        self.closed = True
        if not self._done:
            self._fail(UpstreamBroken("upstream closed the connection mid-response"))

    def data_received(self, data):
        try:
            self.parser.feed_data(data)
        except Exception as e:  # httptools.HttpParserError and friends
            self._fail(UpstreamBroken(f"bad upstream response: {e!r}"))
            self.transport.close()

    # httptools callbacks
    def on_header(self, name, value):
        self.headers.append((name.lower(), value))

    def on_headers_complete(self):
        self.status = self.parser.get_status_code()
        ct = None
        chunked = True
        for k, v in self.headers:
            if k == b"content-type":
                ct = v
            elif k == b"content-length":
                chunked = False
        self.is_stream = _is_stream(ct) or chunked
        if not self._head.done():
            self._head.set_result(None)

    def on_body(self, body):
        self._buf.append(body)
        if self.is_stream:
            w = self._wait
            if w is not None and not w.done():
                w.set_result(None)
            if len(self._buf) > 64 and not self._paused:
                self._paused = True
                self.transport.pause_reading()

    def on_message_complete(self):
        self._done = True
        w = self._wait
        if w is not None and not w.done():
            w.set_result(None)

    def _fail(self, exc):
        self._exc = exc
        if not self._head.done():
            self._head.set_exception(exc)
        w = self._wait
        if w is not None and not w.done():
            w.set_result(None)

    async def _next(self):
        while True:
            if self._buf:
                if self._paused and len(self._buf) <= 16:
                    self._paused = False
                    self.transport.resume_reading()
                return self._buf.popleft()
            if self._done:
                return None
            if self._exc is not None:
                raise self._exc
            self._wait = asyncio.get_running_loop().create_future()
            await self._wait
            self._wait = None


class RawResp:
    __slots__ = ("_conn", "_pool", "is_stream", "raw_headers", "status")

    def __init__(self, conn, pool):
        self._conn = conn
        self._pool = pool
        self.status = conn.status
        self.raw_headers = [(k, v) for k, v in conn.headers if k not in HOP_RESP_B]
        self.is_stream = conn.is_stream

    async def read(self) -> bytes:
        c = self._conn
        while not c._done:
            if c._exc is not None:
                raise c._exc
            c._wait = asyncio.get_running_loop().create_future()
            await c._wait
            c._wait = None
        return b"".join(c._buf)

    async def chunks(self):
        c = self._conn
        while True:
            data = await c._next()
            if data is None:
                return
            yield data

    async def close(self):
        c = self._conn
        if c._done and not c.closed and c.parser.should_keep_alive():
            self._pool.append(c)
        else:
            c.transport.close()


class RawClient:
    name = "raw"

    def __init__(self):
        self.pools: dict[int, list[RawConn]] = {}

    async def send(self, method, port, path, headers, body):
        pool = self.pools.get(port)
        if pool is None:
            pool = self.pools[port] = []
        conn = None
        while pool:
            c = pool.pop()
            if not c.closed:
                conn = c
                break
        if conn is None:
            _, conn = await asyncio.get_running_loop().create_connection(RawConn, HOST, port)
        else:
            conn._reset()
        head = [
            b"%s %s HTTP/1.1\r\nhost: 127.0.0.1:%d\r\ncontent-length: %d\r\n"
            % (
                method.encode() if isinstance(method, str) else method,
                path.encode() if isinstance(path, str) else path,
                port,
                len(body),
            )
        ]
        for k, v in req_headers_bytes(headers):
            head.append(b"%s: %s\r\n" % (k, v))
        head.append(b"\r\n")
        conn.transport.write(b"".join(head) + body)
        await conn._head
        return RawResp(conn, pool)

    async def aclose(self):
        for pool in self.pools.values():
            for c in pool:
                c.transport.close()


def make_client(name: str):
    return {"aiohttp": AiohttpClient, "httpx": HttpxClient, "raw": RawClient}[name]()
