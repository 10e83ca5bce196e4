"""The ASGI application: health endpoints, the proxy, and the start/stop of what they share.

Raw ASGI rather than a framework: the gateway has three routes and a hot path where every
microsecond of per-request work is paid millions of times.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import MutableMapping
from typing import Any

import orjson

from majordomo_gateway.auth.cache import KeyCache
from majordomo_gateway.config import Settings
from majordomo_gateway.pricing import PriceBook
from majordomo_gateway.providers.registry import PROVIDERS
from majordomo_gateway.proxy.errors import send_json
from majordomo_gateway.proxy.handler import ProxyHandler, Receive, Send
from majordomo_gateway.proxy.routing import Router
from majordomo_gateway.storage.database import Database, DatabaseUnavailable, open_database
from majordomo_gateway.storage.spool import Spool
from majordomo_gateway.storage.writer import RowWriter

log = logging.getLogger("majordomo.app")

READY_TIMEOUT = 2.0


class Gateway:
    """``Gateway(settings)`` is the ASGI callable; its lifespan connects and drains everything."""

    def __init__(self, settings: Settings, database: Database | None = None) -> None:
        self.settings = settings
        self.database = database or open_database(settings.database_url)
        self.spool = Spool(settings.spool_dir)
        self.writer = RowWriter(self.database, self.spool, batch_size=settings.writer_batch_size,
                                flush_interval=settings.writer_flush_interval,
                                queue_size=settings.writer_queue_size)
        self.keys = KeyCache(self.database, ttl=settings.key_cache_ttl, max_size=settings.key_cache_size)
        self.prices = PriceBook(settings.pricing_overrides)
        self.proxy = ProxyHandler(settings, Router(settings.providers, PROVIDERS), self.keys, self.writer,
                                  self.prices)

    async def startup(self) -> None:
        try:
            await self.database.connect()
            applied = await self.database.migrate()
            if applied:
                log.info("database migrated: %s", ", ".join(applied))
        except DatabaseUnavailable as exc:
            # Start anyway: the proxy can serve cached keys and the writer spools rows until the
            # database comes back.  /readyz says what is wrong.
            log.error("database unavailable at start, rows will be spooled: %s", exc)
        await self.proxy.start()
        self.writer.start()

    async def shutdown(self) -> None:
        await self.proxy.close()
        await self.writer.close()
        await self.database.close()

    async def __call__(self, scope: MutableMapping[str, Any], receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            path = scope["path"]
            if path == "/health":
                await _plain(send, 200, b"ok")
            elif path == "/readyz":
                await self._ready(send)
            else:
                await self.proxy(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)

    async def _ready(self, send: Send) -> None:
        stats = self.writer.stats().as_dict()
        try:
            await asyncio.wait_for(self.database.ping(), timeout=READY_TIMEOUT)
        except (DatabaseUnavailable, TimeoutError, OSError) as exc:
            body = {"status": "error", "error": f"database unavailable: {exc}", "writer": stats}
            await send_json(send, 503, orjson.dumps(body))
            return
        body = {"status": "ok", "writer": stats}
        await send_json(send, 200, orjson.dumps(body))

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.startup()
                except Exception as exc:
                    log.exception("startup failed")
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return


async def _plain(send: Send, status: int, body: bytes) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"text/plain; charset=utf-8"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
