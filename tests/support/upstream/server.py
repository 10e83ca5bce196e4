"""The mock upstream server: an aiohttp app speaking OpenAI, Anthropic and Gemini, and its runner.

    with MockUpstream() as mock:                     # background thread, ephemeral port
        client = openai.OpenAI(base_url=mock.openai_base_url, api_key="sk-test")
        ...
        assert mock.requests[-1].path == "/v1/chat/completions"

    async with MockUpstream() as mock:               # inside a running event loop
        ...

Control routes (not recorded): ``GET /_mock/requests``, ``DELETE /_mock/requests``,
``GET|PUT|DELETE /_mock/defaults``, ``GET /_mock/health``.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import threading
import time
from types import TracebackType
from typing import Any

import orjson
from aiohttp import web

from . import anthropic, gemini, openai
from .recording import (
    BODY_KEY,
    STATE_KEY,
    MockState,
    RecordedRequest,
    RecordedResponse,
    record_requests,
    record_response,
)
from .scenarios import MockConfigError, resolve_scenario, settings_from_kwargs

SHUTDOWN_TIMEOUT = 0.25
MAX_BODY = 64 * 1024 * 1024


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(data), content_type="application/json")


async def _get_requests(request: web.Request) -> web.Response:
    return _json([r.to_dict() for r in request.app[STATE_KEY].snapshot()])


async def _delete_requests(request: web.Request) -> web.Response:
    request.app[STATE_KEY].clear()
    return _json({"ok": True})


async def _get_defaults(request: web.Request) -> web.Response:
    return _json(request.app[STATE_KEY].defaults)


async def _put_defaults(request: web.Request) -> web.Response:
    try:
        settings = orjson.loads(request[BODY_KEY] or b"{}")
        if not isinstance(settings, dict):
            raise MockConfigError("defaults must be a JSON object")
        resolve_scenario([settings_from_kwargs(settings)])  # validate
    except (orjson.JSONDecodeError, MockConfigError) as exc:
        return _json({"error": f"mock: {exc}"}, status=400)
    request.app[STATE_KEY].defaults = settings
    return _json(settings)


async def _delete_defaults(request: web.Request) -> web.Response:
    request.app[STATE_KEY].defaults = {}
    return _json({})


async def _health(request: web.Request) -> web.Response:
    return _json({"ok": True})


def build_app(state: MockState | None = None) -> web.Application:
    app = web.Application(middlewares=[record_requests], client_max_size=MAX_BODY)
    app[STATE_KEY] = state or MockState()
    app.on_response_prepare.append(record_response)
    for module in (openai, anthropic, gemini):
        for method, path, handler in module.ROUTES:
            app.router.add_route(method, path, handler)
    app.router.add_get("/_mock/requests", _get_requests)
    app.router.add_delete("/_mock/requests", _delete_requests)
    app.router.add_get("/_mock/defaults", _get_defaults)
    app.router.add_put("/_mock/defaults", _put_defaults)
    app.router.add_post("/_mock/defaults", _put_defaults)
    app.router.add_delete("/_mock/defaults", _delete_defaults)
    app.router.add_get("/_mock/health", _health)
    return app


class MockUpstream:
    """A real HTTP server on 127.0.0.1 that answers like the LLM providers.

    ``defaults`` are server-wide settings, e.g. ``MockUpstream(scenario="tool-call",
    usage={"input_tokens": 10})`` (same names as the X-Mock-* headers, ``_`` or ``-``).
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, ssl_context: ssl.SSLContext | None = None,
                 **defaults: Any) -> None:
        self.host = host
        self.port = port
        # With a server TLS context the mock speaks HTTPS, as the real providers do.
        self.ssl_context = ssl_context
        self.state = MockState()
        if defaults:
            self.configure(**defaults)
        self._runner: web.AppRunner | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    # -- addresses
    @property
    def url(self) -> str:
        if not self.port:
            raise RuntimeError("the mock upstream is not started")
        scheme = "https" if self.ssl_context is not None else "http"
        return f"{scheme}://{self.host}:{self.port}"

    @property
    def openai_base_url(self) -> str:
        return f"{self.url}/v1"

    @property
    def anthropic_base_url(self) -> str:
        return self.url

    @property
    def gemini_base_url(self) -> str:
        return self.url

    @property
    def gemini_openai_base_url(self) -> str:
        return f"{self.url}/v1beta/openai"

    # -- recorded requests and defaults
    @property
    def requests(self) -> list[RecordedRequest]:
        """A snapshot of every request received, oldest first."""
        return self.state.snapshot()

    @property
    def responses(self) -> list[RecordedResponse]:
        """What the mock answered, in request order (requests still unanswered, e.g. ``hang``, skipped)."""
        return [r.response for r in self.state.snapshot() if r.response is not None]

    @property
    def last_request(self) -> RecordedRequest:
        requests = self.requests
        if not requests:
            raise AssertionError("the mock upstream has received no request")
        return requests[-1]

    def clear(self) -> None:
        """Forget the recorded requests (and their responses)."""
        self.state.clear()

    def wait_for_requests(self, count: int, timeout: float = 5.0) -> list[RecordedRequest]:
        """Block until at least ``count`` requests were recorded (AssertionError on timeout)."""
        deadline = time.monotonic() + timeout
        while len(requests := self.requests) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"expected {count} requests, got {len(requests)}")
            time.sleep(0.01)
        return requests

    def configure(self, **settings: Any) -> None:
        """Add server-wide defaults (lowest priority, below markers and headers)."""
        merged = {**self.state.defaults, **settings}
        resolve_scenario([settings_from_kwargs(merged)])  # raises MockConfigError if invalid
        self.state.defaults = merged

    def reset(self) -> None:
        """Forget the server-wide defaults and the recorded requests."""
        self.state.defaults = {}
        self.clear()

    # -- lifecycle inside the current event loop
    async def start_async(self) -> MockUpstream:
        runner = web.AppRunner(
            build_app(self.state),
            access_log=None,
            handler_cancellation=True,
            shutdown_timeout=SHUTDOWN_TIMEOUT,
        )
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port, reuse_address=True, ssl_context=self.ssl_context)
        await site.start()
        self._runner = runner
        self.port = runner.addresses[0][1]
        return self

    async def stop_async(self) -> None:
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    async def __aenter__(self) -> MockUpstream:
        return await self.start_async()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop_async()

    # -- lifecycle in a background thread
    def start(self) -> MockUpstream:
        if self._thread is not None:
            return self
        ready = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            asyncio.set_event_loop(loop)
            self._loop = loop
            try:
                loop.run_until_complete(self.start_async())
            except BaseException as exc:
                failure.append(exc)
                ready.set()
                loop.close()
                return
            ready.set()
            try:
                loop.run_forever()
            finally:
                loop.run_until_complete(self.stop_async())
                pending = [task for task in asyncio.all_tasks(loop) if not task.done()]
                for task in pending:
                    task.cancel()
                if pending:
                    loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
                with contextlib.suppress(Exception):
                    loop.run_until_complete(loop.shutdown_asyncgens())
                loop.close()

        self._thread = threading.Thread(target=run, name=f"mock-upstream-{id(self):x}", daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("the mock upstream did not start within 10 s")
        if failure:
            self._thread = None
            raise failure[0]
        return self

    def stop(self) -> None:
        thread, loop = self._thread, self._loop
        if thread is None or loop is None:
            return
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        self._thread = self._loop = None

    def __enter__(self) -> MockUpstream:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # -- standalone
    def serve_forever(self) -> None:
        """Run in the current thread until interrupted (``python -m tests.support.upstream``)."""

        async def main() -> None:
            await self.start_async()
            print(f"mock upstream listening on {self.url}", flush=True)
            try:
                await asyncio.Event().wait()
            finally:
                await self.stop_async()

        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(main())

    def __repr__(self) -> str:
        where = f"http://{self.host}:{self.port}" if self.port else "not started"
        return f"<MockUpstream {where}>"
