"""The ASGI application: health endpoints, the proxy, and the start/stop of what they share.

Raw ASGI rather than a framework: the gateway has four routes and a hot path where every
microsecond of per-request work is paid millions of times.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
from collections.abc import Mapping, MutableMapping
from typing import TYPE_CHECKING, Any

import orjson

from majordomo_gateway.admin.api import AdminContext
from majordomo_gateway.auth.cache import KeyCache
from majordomo_gateway.auth.vault import ProxyKeyVault
from majordomo_gateway.budgets.alerts import AlertDeliverer
from majordomo_gateway.budgets.guard import BudgetGuard
from majordomo_gateway.clock import Clock, utc_now
from majordomo_gateway.config import Settings, pricing_ids
from majordomo_gateway.dashboard.app import PREFIXES, build_console, handles
from majordomo_gateway.dashboard.auth import session_authenticator
from majordomo_gateway.metrics.budgets import budget_gauges
from majordomo_gateway.metrics.endpoint import MetricsView
from majordomo_gateway.metrics.labels import MetadataLabels
from majordomo_gateway.metrics.process import ProcessMetrics
from majordomo_gateway.metrics.shared import SnapshotDirectory
from majordomo_gateway.pricing import PriceBook
from majordomo_gateway.pricing.refresh import PriceRefresher
from majordomo_gateway.proxy.errors import send_json
from majordomo_gateway.proxy.exchange import Receive, Send
from majordomo_gateway.proxy.pipeline import ProxyHandler
from majordomo_gateway.proxy.routing import Router
from majordomo_gateway.proxy.upstream_api import Upstream
from majordomo_gateway.storage.database import Database, DatabaseUnavailable, open_database
from majordomo_gateway.storage.spool import Spool
from majordomo_gateway.storage.writer import RowWriter
from majordomo_gateway.tracing.settings import otel_settings

if TYPE_CHECKING:
    from majordomo_gateway.tracing.otel import Tracing

log = logging.getLogger("majordomo.app")

READY_TIMEOUT = 2.0


class Gateway:
    """``Gateway(settings)`` is the ASGI callable; its lifespan connects and drains everything.
    ``upstream`` replaces the HTTP client requests go out through (tests pass an in-memory one,
    ``majordomo demo`` a simulated provider); ``clock`` the time rows are stamped with.
    OpenTelemetry follows the process's OTEL_* variables (tracing/)."""

    def __init__(self, settings: Settings, database: Database | None = None,
                 upstream: Upstream | None = None, clock: Clock = utc_now) -> None:
        self.settings = settings
        self.database = database or open_database(settings.database.url)
        self.spool = Spool(settings.writer.spool_dir)
        self._database_ready = False
        self.writer = RowWriter(self.database, self.spool, batch_size=settings.writer.batch_size,
                                flush_interval=settings.writer.flush_interval,
                                queue_size=settings.writer.queue_size, prepare=self._prepare_database,
                                on_spool_failure=settings.writer.on_spool_failure)
        self.keys = KeyCache(self.database, ttl=settings.auth.cache_ttl, max_size=settings.auth.cache_size)
        # MAJORDOMO_SECRETS_KEY is read from the environment only, never from a config file.
        self.vault = ProxyKeyVault.from_environment(self.database, ttl=settings.auth.cache_ttl,
                                                    max_size=settings.auth.cache_size)
        self.prices = PriceBook(settings.pricing.overrides_file, provider_ids=pricing_ids(settings))
        self.price_refresher = (PriceRefresher(settings.pricing.refresh_url, settings.pricing.refresh_interval)
                                if settings.pricing.refresh_url else None)
        self._change_feed: asyncio.Task[None] | None = None
        self.metrics = _metrics_view(settings, self.writer)
        self.tracing = _tracing(os.environ)
        # Budgets and rate limits: an in-memory view of the ledger, refreshed in the background;
        # the writer tells it which rows (and so which spend) the database has committed.
        self.budgets = BudgetGuard(self.database.budgets, self.prices, settings.budgets, clock)
        if self.metrics is not None and self.metrics.own is not None:
            self.metrics.own.add_gauges(budget_gauges(self.budgets, settings.metrics.max_label_values))
        self.writer.inserter.on_committed = self.budgets.committed
        self.alerts = AlertDeliverer(self.database.budgets, settings.budgets, clock)
        self.proxy = ProxyHandler(settings, Router(settings.providers), self.keys, self.writer,
                                  self.prices, upstream, clock, self.vault,
                                  metrics=self.metrics.own if self.metrics else None, tracing=self.tracing,
                                  budgets=self.budgets)
        # The dashboard and its API (/dashboard, /api/v1/...): never on the proxy's path.
        admin = AdminContext(frozenset(pricing_ids(settings)), self.vault.keyring,
                             self.vault.keyring_error or "MAJORDOMO_SECRETS_KEY is not set", settings.budgets.time_zone)
        self.console = build_console(self.database, session_authenticator(self.database, clock), admin, clock)

    async def _prepare_database(self) -> None:
        """Connect and migrate, once.  At start, and, if the database was down then, again from the
        writer's reconnection probe, so that a gateway started before its database recovers."""
        if self._database_ready:
            return
        await self.database.connect()
        applied = await self.database.migrate()
        if applied:
            log.info("database migrated: %s", ", ".join(applied))
        self._database_ready = True

    async def startup(self) -> None:
        try:
            await self._prepare_database()
        except DatabaseUnavailable as exc:
            # Start anyway: the writer spools rows and keeps trying to connect; keys this process
            # has not seen get a 503 until then.  /readyz says what is wrong.
            log.error("database unavailable at start, rows will be spooled until it answers: %s", exc)
            self.writer.mark_unavailable(str(exc))
        if self.vault.keyring is None:
            log.info("proxy keys (mdm_pk_...) cannot be used: %s", self.vault.keyring_error)
        await self.proxy.start()
        if self._database_ready:
            try:
                # Enforced from the first request, not the first refresh.
                await self.budgets.refresh()
            except DatabaseUnavailable as exc:
                log.error("budgets: cannot read them at start (%s); retrying in the background", exc)
        self.budgets.start()
        self.alerts.start()
        self.writer.start()
        if self.metrics is not None:
            self.metrics.start()
        # Keys revoked or edited by another process (the CLI, another worker's admin API) are seen
        # within a second, not the cache's TTL (storage/changes.py).
        self._change_feed = asyncio.create_task(self.database.change_feed().run(self.keys_changed),
                                                name="majordomo-key-changes")
        if self.price_refresher is not None:
            self.price_refresher.start()
        # Everything built so far lives as long as the process: take it out of the garbage
        # collector's view, so full collections stop walking the start-up objects, which stalled
        # the loop for tens of ms (docs/performance.md; bench/results/gc-freeze-whatif.json).
        gc.collect()
        gc.freeze()

    def keys_changed(self) -> None:
        """A key or proxy key changed somewhere: every cached one is looked up again on its next use."""
        self.keys.mark_all_due()
        self.vault.mark_all_due()

    async def shutdown(self) -> None:
        if self._change_feed is not None:
            self._change_feed.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._change_feed
            self._change_feed = None
        if self.price_refresher is not None:
            self.price_refresher.stop()
        await self.proxy.close()
        await self.budgets.close()
        await self.alerts.close()
        await self.writer.close()
        if self.metrics is not None:
            await self.metrics.close()
        if self.tracing is not None:
            await self.tracing.close()
        await self.database.close()

    async def __call__(self, scope: MutableMapping[str, Any], receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            path = scope["path"]
            if path == "/health":
                await _plain(send, 200, b"ok")
            elif path == "/readyz":
                await self._ready(send)
            elif path == "/metrics":
                await self._metrics(scope, send)
            elif path.startswith(PREFIXES) and handles(path):  # ~70 ns for a proxied path
                await self.console(scope, receive, send)
            else:
                await self.proxy(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)

    async def _metrics(self, scope: MutableMapping[str, Any], send: Send) -> None:
        settings = self.settings.metrics
        if self.metrics is None or settings.port is not None:
            where = (f"on port {settings.port} (metrics.port)" if settings.port is not None and settings.enabled
                     else "off (metrics.enabled is false)")
            await _plain(send, 404, f"Prometheus metrics are {where}\n".encode())
            return
        await self.metrics(scope, send)

    async def _ready(self, send: Send) -> None:
        """200 ``ok``; 200 ``degraded`` when serving but a row could be lost (the spool is not
        writable); 503 ``error`` when the database is unreachable.  ``writer`` holds the numbers
        (this process's queue and counters; the spool directory's files, shared by all workers),
        ``warnings`` says in words what is wrong."""
        stats = self.writer.stats()
        warnings = stats.warnings()
        try:
            await asyncio.wait_for(self.database.ping(), timeout=READY_TIMEOUT)
        except (DatabaseUnavailable, TimeoutError, OSError) as exc:
            error = f"database unavailable: {exc}" if str(exc) else f"database unavailable: {type(exc).__name__}"
            body = {"status": "error", "error": error, "warnings": warnings, "writer": stats.as_dict()}
            await send_json(send, 503, orjson.dumps(body))
            return
        # The writer's view lags the ping by up to a second; the ping is what readiness means.
        warnings = [w for w in warnings if not w.startswith("database unavailable")]
        body = {"status": "ok" if stats.spool_ok else "degraded", "warnings": warnings, "writer": stats.as_dict()}
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


def _tracing(environ: Mapping[str, str]) -> Tracing | None:
    """OpenTelemetry when the OTEL_EXPORTER_OTLP_* variables ask for it; else None, and nothing of
    OpenTelemetry is imported."""
    settings = otel_settings(environ)
    if not settings.enabled:
        return None
    from majordomo_gateway.tracing.otel import Tracing

    return Tracing(settings)


def _metrics_view(settings: Settings, writer: RowWriter) -> MetricsView | None:
    """This worker's metrics: counted unless metrics.enabled is false, published to metrics.dir
    when there is one (``majordomo serve`` always gives its workers one)."""
    config = settings.metrics
    if not config.enabled:
        return None
    labels = MetadataLabels(config.labels, config.max_label_values) if config.labels else None
    own = ProcessMetrics(labels)
    own.writer = writer.stats
    directory = SnapshotDirectory(config.dir) if config.dir else None
    return MetricsView(own, directory, config.token)


async def _plain(send: Send, status: int, body: bytes) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"text/plain; charset=utf-8"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
