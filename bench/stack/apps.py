"""The minimal proxy, written once per server interface: raw ASGI, RSGI, aiohttp.web.

What each does, like the gateway's hot path: read the whole request body, forward method/path/headers/body
to the upstream over the client's keep-alive pool, then either return status/headers/body
(content-length) or, for text/event-stream (or chunked) responses, relay the body chunk by chunk.
An exception from the upstream after the response started is left to propagate to the server
(that is the behaviour checked by semantics.py).

Environment:
  STACK_CLIENT     aiohttp | httpx | raw            (default aiohttp)
  STACK_JSON_PORT  upstream port for everything else (default 18081)
  STACK_SSE_PORT   upstream port for /sse*, /big     (default 18082)
  STACK_WATCH_DISCONNECT=1  ASGI only: watch receive() for http.disconnect while streaming and
                   stop relaying (uvicorn's send() silently drops data after a disconnect).
"""

from __future__ import annotations

import asyncio
import os

from clients import make_client

CLIENT_NAME = os.environ.get("STACK_CLIENT", "aiohttp")
JSON_PORT = int(os.environ.get("STACK_JSON_PORT", "18081"))
SSE_PORT = int(os.environ.get("STACK_SSE_PORT", "18082"))
WATCH = os.environ.get("STACK_WATCH_DISCONNECT") == "1"
EVENT_LOG = os.environ.get("STACK_PROXY_LOG")

_client = None


def client():
    global _client
    if _client is None:
        _client = make_client(CLIENT_NAME)
    return _client


def port_for(path: str) -> int:
    return SSE_PORT if path.startswith(("/sse", "/big")) else JSON_PORT


def plog(line: str) -> None:
    if EVENT_LOG:
        with open(EVENT_LOG, "a") as f:
            f.write(line + "\n")


# --------------------------------------------------------------------------- ASGI


async def asgi_app(scope, receive, send):
    t = scope["type"]
    if t == "lifespan":
        while True:
            m = await receive()
            if m["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif m["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if t != "http":
        return
    m = await receive()
    body = m.get("body", b"")
    if m.get("more_body"):
        parts = [body]
        while m.get("more_body"):
            m = await receive()
            parts.append(m.get("body", b""))
        body = b"".join(parts)
    path = scope["path"]
    qs = scope.get("query_string")
    full = path + "?" + qs.decode() if qs else path
    resp = await client().send(scope["method"], port_for(path), full, scope["headers"], body)
    try:
        if not resp.is_stream:
            data = await resp.read()
            headers = resp.raw_headers
            headers.append((b"content-length", str(len(data)).encode()))
            await send({"type": "http.response.start", "status": resp.status, "headers": headers})
            await send({"type": "http.response.body", "body": data})
            return
        await send({"type": "http.response.start", "status": resp.status, "headers": resp.raw_headers})
        if WATCH:
            await _relay_watched(resp, receive, send)
        else:
            n = 0
            try:
                async for chunk in resp.chunks():
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
                    n += 1
            finally:
                plog(f"asgi relayed={n}")
            await send({"type": "http.response.body", "body": b"", "more_body": False})
    finally:
        await resp.close()


async def _relay_watched(resp, receive, send):
    """Relay while a second task waits on receive() for http.disconnect."""
    disconnected = asyncio.Event()

    async def watch():
        while True:
            m = await receive()
            if m["type"] == "http.disconnect":
                disconnected.set()
                return

    w = asyncio.ensure_future(watch())
    n = 0
    try:
        async for chunk in resp.chunks():
            if disconnected.is_set():
                plog(f"asgi-watched stopped relayed={n} (client gone)")
                return
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
            n += 1
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        plog(f"asgi-watched relayed={n}")
    finally:
        w.cancel()


# --------------------------------------------------------------------------- RSGI (granian)


async def rsgi_app(scope, proto):
    body = await proto()
    path = scope.path
    qs = scope.query_string
    full = path + "?" + qs if qs else path
    resp = await client().send(scope.method, port_for(path), full, scope.headers.items(), body)
    try:
        headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in resp.raw_headers]
        if not resp.is_stream:
            data = await resp.read()
            proto.response_bytes(resp.status, headers, data)
            return
        tr = proto.response_stream(resp.status, headers)
        n = 0
        try:
            async for chunk in resp.chunks():
                await tr.send_bytes(chunk)
                n += 1
        finally:
            plog(f"rsgi relayed={n}")
    finally:
        await resp.close()


# --------------------------------------------------------------------------- aiohttp.web


def make_aiohttp_app():
    from aiohttp import web
    from multidict import CIMultiDict

    async def handler(request):
        body = await request.read()
        path = request.path
        resp = await client().send(request.method, port_for(path), request.path_qs, request.raw_headers, body)
        try:
            headers = CIMultiDict((k.decode("latin-1"), v.decode("latin-1")) for k, v in resp.raw_headers)
            if not resp.is_stream:
                data = await resp.read()
                return web.Response(status=resp.status, body=data, headers=headers)
            sr = web.StreamResponse(status=resp.status, headers=headers)
            await sr.prepare(request)
            n = 0
            try:
                async for chunk in resp.chunks():
                    await sr.write(chunk)
                    n += 1
            finally:
                plog(f"aiohttp-web relayed={n}")
            await sr.write_eof()
            return sr
        finally:
            await resp.close()

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    return app
