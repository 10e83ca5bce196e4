"""``GET /metrics``: on the gateway's port (any worker answers for all), or on ``metrics.port``
(a small threaded server in the ``majordomo serve`` process, reading what the workers publish).

With ``metrics.token`` set, a scrape needs ``Authorization: Bearer <token>``; without, a 401.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import os
import threading
from collections.abc import MutableMapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from majordomo_gateway.metrics.process import ProcessMetrics, Snapshot
from majordomo_gateway.metrics.shared import PUBLISH_INTERVAL, SnapshotDirectory, merge
from majordomo_gateway.proxy.exchange import Send

__all__ = ["MetricsServer", "MetricsView", "authorized"]

log = logging.getLogger("majordomo.metrics")

_UNAUTHORIZED = b"/metrics needs Authorization: Bearer <metrics.token>\n"


def authorized(header: bytes | None, token: str | None) -> bool:
    if token is None:
        return True
    if header is None:
        return False
    scheme, _, presented = header.partition(b" ")
    if scheme.lower() != b"bearer":
        return False
    return hmac.compare_digest(presented.strip(), token.encode("utf-8"))


def _render(own: Snapshot | None, directory: SnapshotDirectory | None) -> bytes:
    # Imported here: prometheus-client is needed by scrapes only, never by a request.
    from majordomo_gateway.metrics.exposition import render

    snapshots = [own] if own is not None else []
    if directory is not None:
        if own is not None:
            directory.publish(own)
        snapshots += directory.read_all(skip_pid=own["pid"] if own is not None else None)
    return render(merge(snapshots))


class MetricsView:
    """This worker's numbers and the directory it shares with the others."""

    def __init__(self, own: ProcessMetrics | None, directory: SnapshotDirectory | None,
                 token: str | None) -> None:
        self.own = own
        self.directory = directory
        self.token = token
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self.directory is not None and self.own is not None and self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._publish_loop(), name="majordomo-metrics")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self.publish()  # the last numbers, so that nothing this worker counted is lost

    def publish(self) -> None:
        if self.directory is not None and self.own is not None:
            self.directory.publish(self.own.snapshot())

    async def _publish_loop(self) -> None:
        while True:
            await asyncio.sleep(PUBLISH_INTERVAL)
            try:
                self.publish()
            except Exception:
                log.exception("publishing metrics failed")

    async def __call__(self, scope: MutableMapping[str, Any], send: Send) -> None:
        if scope["method"] not in ("GET", "HEAD"):
            await _answer(send, 405, b"text/plain; charset=utf-8", b"/metrics answers GET\n", [(b"allow", b"GET")])
            return
        auth = next((v for k, v in scope["headers"] if k == b"authorization"), None)
        if not authorized(auth, self.token):
            await _answer(send, 401, b"text/plain; charset=utf-8", _UNAUTHORIZED,
                          [(b"www-authenticate", b'Bearer realm="metrics"')])
            return
        own = self.own.snapshot() if self.own is not None else None  # on the loop: the dicts are the loop's
        body = await asyncio.to_thread(_render, own, self.directory)
        from majordomo_gateway.metrics.exposition import CONTENT_TYPE

        await _answer(send, 200, CONTENT_TYPE, body if scope["method"] == "GET" else b"")


async def _answer(send: Send, status: int, content_type: bytes, body: bytes,
                  extra: list[tuple[bytes, bytes]] | None = None) -> None:
    headers = [(b"content-type", content_type), (b"content-length", str(len(body)).encode()), *(extra or [])]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class MetricsServer:
    """``metrics.port``: every worker's published numbers, served from a thread of the
    ``majordomo serve`` process (it outlives workers, so the port does not move between them)."""

    def __init__(self, host: str, port: int, directory: SnapshotDirectory, token: str | None) -> None:
        view = directory

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path.split("?", 1)[0] != "/metrics":
                    self._reply(404, b"text/plain; charset=utf-8", b"only /metrics here\n")
                    return
                header = self.headers.get("Authorization")
                if not authorized(header.encode("latin-1") if header is not None else None, token):
                    self._reply(401, b"text/plain; charset=utf-8", _UNAUTHORIZED,
                                {"WWW-Authenticate": 'Bearer realm="metrics"'})
                    return
                from majordomo_gateway.metrics.exposition import CONTENT_TYPE

                self._reply(200, CONTENT_TYPE, _render(None, view))

            def _reply(self, status: int, content_type: bytes, body: bytes,
                       extra: dict[str, str] | None = None) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type.decode())
                self.send_header("Content-Length", str(len(body)))
                for name, value in (extra or {}).items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # scrapes every few seconds would drown the gateway's log

        self.server = ThreadingHTTPServer((host, port), Handler)
        self.server.daemon_threads = True
        self._thread = threading.Thread(target=self.server.serve_forever, name="majordomo-metrics-port",
                                        daemon=True)

    def start(self) -> None:
        self._thread.start()
        log.info("metrics on http://%s:%d/metrics (pid %d)", *self.server.server_address[:2], os.getpid())

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
