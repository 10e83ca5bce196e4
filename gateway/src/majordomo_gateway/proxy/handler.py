"""One proxied request, start to finish.

    authenticate → route → read body → upstream request → relay bytes (usage parser watching)
    → after the last byte: price → row → writer

The relay never waits on usage parsing, pricing or the database: the parser only looks at the
bytes as they pass, and pricing and the row happen after the client has its last byte.

A route may carry an adapter (proxy/adapter.py) that rewrites the request before it goes
upstream and transforms the response bytes on their way to the client (the anthropic-openai
translation, the stream-usage injection); the usage parser still sees the upstream's bytes.
"""

from __future__ import annotations

import asyncio
import logging
import time
import zlib
from collections.abc import Awaitable, Callable, MutableMapping
from contextvars import ContextVar
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl, urlencode

import uuid_utils

from majordomo_gateway.auth.cache import KeyCache, KeyStatus
from majordomo_gateway.auth.keys import hash_secret
from majordomo_gateway.config import Settings
from majordomo_gateway.pricing import PriceBook
from majordomo_gateway.providers.base import RequestInfo, UsageResult
from majordomo_gateway.proxy.adapter import AdaptedRequest, AdapterError, ResponseTransform
from majordomo_gateway.proxy.errors import send_error
from majordomo_gateway.proxy.headers import MetadataError, response_headers, split_headers
from majordomo_gateway.proxy.routing import Route, Router, RoutingError
from majordomo_gateway.proxy.stream_usage import StreamUsageInjector
from majordomo_gateway.proxy.upstream import (
    UpstreamBroken,
    UpstreamClient,
    UpstreamError,
    UpstreamResponse,
    UpstreamTimeout,
)
from majordomo_gateway.storage.database import DatabaseUnavailable
from majordomo_gateway.storage.records import RequestRecord, truncate_message
from majordomo_gateway.storage.writer import RowWriter
from majordomo_gateway.usage import Usage

log = logging.getLogger("majordomo.proxy")

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

MAX_REQUEST_BODY = 64 * 1024 * 1024
# A non-streamed body larger than this is relayed but not parsed for usage.
MAX_PARSED_BODY = 32 * 1024 * 1024
MAX_ERROR_CAPTURE = 4096
_CREDENTIAL_QUERY_KEYS = frozenset({"key"})
# Non-streamed bodies up to this size (with a Content-Length) are read whole and sent in one piece.
_WHOLE_BODY_LIMIT = 1024 * 1024
# Response headers that no longer describe a body once a route adapter has transformed it.
_TRANSFORMED_DROPPED = frozenset({b"content-length", b"content-encoding"})


# Set when the relay ends a response without its final message on purpose (the upstream stream
# broke, or the client left): the server then drops the connection, which is the point.  Its
# "returned without completing response" error line would be noise; cli/serve.py filters it.
dropped_on_purpose: ContextVar[bool] = ContextVar("majordomo_dropped_on_purpose", default=False)


def _now() -> datetime:
    return datetime.now(UTC)


def _logged_path(path: str, query: bytes) -> str:
    if not query:
        return path
    pairs = parse_qsl(query.decode("latin-1"), keep_blank_values=True)
    kept = [(k, v) for k, v in pairs if k not in _CREDENTIAL_QUERY_KEYS]
    return f"{path}?{urlencode(kept)}" if kept else path


class _Decoder:
    """Undo gzip/deflate for the usage parser only; the client still gets the bytes unchanged."""

    def __init__(self) -> None:
        self._z = zlib.decompressobj(wbits=47)  # 32 + 15: gzip or zlib header, auto-detected

    def __call__(self, chunk: bytes) -> bytes:
        try:
            return self._z.decompress(chunk)
        except zlib.error:
            return b""


class ProxyHandler:
    def __init__(self, settings: Settings, router: Router, keys: KeyCache, writer: RowWriter,
                 prices: PriceBook) -> None:
        self.settings = settings
        self.router = router
        self.keys = keys
        self.writer = writer
        self.prices = prices
        self.upstream: UpstreamClient | None = None
        if settings.proxy.inject_stream_usage:
            injector = StreamUsageInjector()
            for name in router.routes_of_kind("openai"):
                router.set_adapter(name, injector)

    async def start(self) -> None:
        self.upstream = UpstreamClient(connect_timeout=self.settings.proxy.connect_timeout,
                                       read_timeout=self.settings.proxy.read_timeout)

    async def close(self) -> None:
        if self.upstream is not None:
            await self.upstream.close()
            self.upstream = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        requested_at = _now()
        try:
            headers = split_headers(scope["headers"], max_metadata=self.settings.proxy.max_metadata_headers,
                                    max_value_bytes=self.settings.proxy.max_metadata_value_bytes)
        except MetadataError as exc:
            await send_error(send, 400, "invalid_metadata", str(exc))
            return

        # -- authenticate ---------------------------------------------------------------------
        if not headers.majordomo_key:
            await send_error(send, 401, "missing_majordomo_key",
                             "Missing X-Majordomo-Key header: send your Majordomo API key (mdm_sk_...). "
                             "Create one with `majordomo keys create --name NAME`.")
            return
        try:
            check = await self.keys.check(headers.majordomo_key)
        except DatabaseUnavailable:
            await send_error(send, 503, "database_unavailable",
                             "Majordomo cannot verify the API key: its database is unavailable. Retry shortly.")
            return
        if check.status is KeyStatus.UNKNOWN:
            await send_error(send, 401, "invalid_majordomo_key",
                             "Invalid X-Majordomo-Key: no such Majordomo API key.")
            return
        if check.status is KeyStatus.REVOKED:
            await send_error(send, 401, "revoked_majordomo_key",
                             "Revoked X-Majordomo-Key: this Majordomo API key has been revoked.")
            return
        assert check.key is not None

        # -- route ----------------------------------------------------------------------------
        path: str = scope["path"]
        raw_path: bytes = scope.get("raw_path") or path.encode("utf-8")
        query: bytes = scope.get("query_string", b"")
        try:
            route = self.router.resolve(path, raw_path, headers.provider)
        except RoutingError as exc:
            await send_error(send, 400, exc.code, exc.message)
            return

        body = await _read_body(receive)
        if body is None:
            await send_error(send, 413, "request_too_large",
                             f"request body over {MAX_REQUEST_BODY} bytes")
            return

        provider = route.provider
        adapted: AdaptedRequest | None = None
        if route.adapter is None:
            request_info = provider.request_info(path, body)
        else:
            try:
                adapted = route.adapter.adapt(provider, path, body, headers.forward)
            except AdapterError as exc:
                await send_error(send, 400, exc.code, exc.message)
                return
            request_info = adapted.info
        if headers.provider is None and route.name == "openai" and (request_info.model or "").startswith("gemini"):
            # OpenAI would answer with a confusing 401/404; the guide's Gemini trap deserves a clear 400.
            await send_error(send, 400, "gemini_model_on_openai_route",
                             f"Model {request_info.model!r} is a Gemini model, but without an X-Majordomo-Provider "
                             "header this path goes to OpenAI. Send X-Majordomo-Provider: gemini-openai "
                             "(majordomo_frameworks' build_extra_headers_gemini() does this).")
            return
        query_params = dict(parse_qsl(query.decode("latin-1"))) if query else {}
        credential = provider.credential(headers.lowered, query_params)
        record = RequestRecord(
            id=str(uuid_utils.uuid7()),
            majordomo_api_key_id=check.key.id,
            provider_api_key_hash=hash_secret(credential) if credential else None,
            provider_api_key_alias=headers.provider_alias,
            provider=provider.name,
            route=route.name,
            model=request_info.model,
            request_path=_logged_path(path, query),
            request_method=scope["method"],
            requested_at=requested_at,
            responded_at=requested_at,
            response_time_ms=0.0,
            streamed=request_info.stream,
            raw_metadata=headers.metadata,
        )
        upstream_path, forward = raw_path, headers.forward
        if adapted is not None:
            body, forward = adapted.body, adapted.headers
            upstream_path = adapted.path or raw_path
        try:
            await self._relay(route, upstream_path, query, scope["method"], forward, body,
                              request_info, record, started, receive, send, adapted)
        finally:
            elapsed = time.perf_counter() - started
            record.response_time_ms = round(elapsed * 1000, 3)
            record.responded_at = requested_at + timedelta(seconds=elapsed)
            self._finish(record)

    async def _relay(self, route: Route, raw_path: bytes, query: bytes, method: str,
                     forward: list[tuple[str, str]], body: bytes, request_info: RequestInfo,
                     record: RequestRecord, started: float, receive: Receive, send: Send,
                     adapted: AdaptedRequest | None = None) -> None:
        """``raw_path`` is the upstream path: the client's, unless a route adapter changed it."""
        assert self.upstream is not None
        request_id = record.id.encode()
        provider_label = route.name
        try:
            response = await self.upstream.request(route.origin, method, route.upstream_target(raw_path, query),
                                                   forward, body)
        except UpstreamTimeout:
            record.status_code = 504
            record.error_message = f"{provider_label} upstream timed out"
            await send_error(send, 504, "upstream_timeout",
                             f"The {provider_label} upstream did not answer in time.",
                             [(b"x-majordomo-request-id", request_id)], provider=provider_label)
            return
        except UpstreamError as exc:
            record.status_code = 502
            record.error_message = truncate_message(f"{provider_label} upstream unreachable: {exc}")
            await send_error(send, 502, "upstream_unreachable",
                             f"The {provider_label} upstream could not be reached.",
                             [(b"x-majordomo-request-id", request_id)], provider=provider_label)
            return

        async with response:
            record.status_code = response.status
            content_type = response.content_type.decode("latin-1")
            streamed = request_info.stream or content_type.startswith("text/event-stream")
            record.streamed = streamed
            ok = response.status < 400
            parser = route.provider.stream_parser(raw_path.decode("latin-1"), request_info) \
                if streamed and ok else None
            decode = _Decoder() if response.content_encoding in (b"gzip", b"x-gzip", b"deflate") else None
            captured: list[bytes] = []
            captured_size = 0
            capture_limit = MAX_PARSED_BODY if ok else MAX_ERROR_CAPTURE
            transform: ResponseTransform | None = None
            if adapted is not None and adapted.response is not None:
                transform = adapted.response(response.status, content_type)

            out_headers = response_headers(response.raw_headers, request_id)
            if transform is not None:
                out_headers = [(k, v) for k, v in out_headers if k not in _TRANSFORMED_DROPPED]
            length = response.content_length
            if not streamed and transform is None and length is not None and length <= _WHOLE_BODY_LIMIT:
                # The common case (a JSON answer of known, modest size): one read, one send.
                await self._relay_whole(response, route, raw_path, record, out_headers, ok, decode, send)
                return
            await send({"type": "http.response.start", "status": response.status, "headers": out_headers})

            disconnected = asyncio.Event()
            watcher = asyncio.get_running_loop().create_task(_watch_disconnect(receive, disconnected)) \
                if streamed else None
            upstream_broken: str | None = None
            completed = False
            abandoned_at: float | None = None
            abandoned_bytes = 0
            # A send that had to wait for the client (eager path below); later bytes wait for it.
            pending: asyncio.Future[None] | None = None

            if parser is not None and transform is None and decode is None:
                # The eager path: each upstream read is parsed and sent on inside its read callback,
                # with no task wake-up or loop iteration per event.  Anything unusual (the client
                # gone, a send that has to wait) declines or hands over to the loop below.
                def sink(data: bytes, last: bool) -> bool:
                    nonlocal completed, pending
                    if pending is not None or disconnected.is_set():
                        return False
                    if record.time_to_first_token_ms is None:
                        record.time_to_first_token_ms = round((time.perf_counter() - started) * 1000, 3)
                    parser.feed(data)
                    suspended = _send_now(send, {"type": "http.response.body", "body": data, "more_body": not last})
                    completed = last
                    if suspended is not None:
                        # The client's socket is full: stop reading the upstream until it drains.
                        pending = suspended
                        response.pause_reading()
                        suspended.add_done_callback(lambda _: response.resume_reading())
                    return True

                response.set_sink(sink)
            try:
                readany = response.readany
                while True:
                    try:
                        chunk = await readany()
                    except UpstreamTimeout:
                        upstream_broken = "upstream stream timed out"
                        break
                    except UpstreamBroken as exc:
                        upstream_broken = f"upstream stream broken: {exc}"
                        break
                    if not chunk:
                        break
                    if record.time_to_first_token_ms is None and streamed:
                        record.time_to_first_token_ms = round((time.perf_counter() - started) * 1000, 3)
                    plain = decode(chunk) if decode is not None else chunk
                    if parser is not None:
                        parser.feed(plain)
                    elif captured_size < capture_limit:
                        captured.append(plain)
                        captured_size += len(plain)
                    if pending is not None:
                        await pending
                        pending = None
                    if abandoned_at is None:
                        if not disconnected.is_set():
                            if transform is not None:
                                chunk = transform.feed(plain)
                                if chunk:
                                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
                                continue
                            if response.at_eof:
                                # The body ended with this read (a stream's last event and its end
                                # usually share a packet): one write carries both.
                                await send({"type": "http.response.body", "body": chunk, "more_body": False})
                                completed = True
                                break
                            await send({"type": "http.response.body", "body": chunk, "more_body": True})
                            continue
                        record.aborted = True
                        abandoned_at = time.monotonic()
                    # The client left: keep reading, within bounds, only to learn the usage.
                    abandoned_bytes += len(chunk)
                    if (abandoned_bytes > self.settings.proxy.abandoned_stream_max_bytes
                            or time.monotonic() - abandoned_at > self.settings.proxy.abandoned_stream_max_seconds):
                        break
                if pending is not None:
                    await pending
                    pending = None
            except asyncio.CancelledError:
                record.aborted = True
                raise
            finally:
                response.set_sink(None)
                if pending is not None:
                    pending.cancel()
                if watcher is not None:
                    watcher.cancel()
                if parser is not None:
                    self._apply(record, parser.finish(), request_info)
                elif captured:
                    self._apply_body(record, route, raw_path, b"".join(captured), ok, captured_size >= capture_limit)
                if upstream_broken is not None:
                    record.error_message = truncate_message(
                        f"{upstream_broken}" + (f"; {record.error_message}" if record.error_message else ""))

            if completed:
                return  # the client has every byte (the server reports a disconnect after that)
            if disconnected.is_set():
                record.aborted = True
            if upstream_broken is not None or record.aborted:
                # Returning without the final body message makes the server drop the connection:
                # the client sees a broken stream, never a clean end of a truncated one.
                dropped_on_purpose.set(True)
                return
            tail = transform.finish() if transform is not None else b""
            await send({"type": "http.response.body", "body": tail, "more_body": False})

    async def _relay_whole(self, response: UpstreamResponse, route: Route, raw_path: bytes,
                           record: RequestRecord, out_headers: list[tuple[bytes, bytes]], ok: bool,
                           decode: _Decoder | None, send: Send) -> None:
        try:
            body = await response.read()
        except UpstreamError as exc:
            # Nothing has reached the client yet, so it can get a clean error instead of a cut body.
            record.status_code = 502
            record.error_message = f"upstream response broken: {exc}"
            await send_error(send, 502, "upstream_broken",
                             f"The {route.name} upstream closed the connection before its response was complete.",
                             [(b"x-majordomo-request-id", record.id.encode())], provider=route.name)
            return
        await send({"type": "http.response.start", "status": response.status, "headers": out_headers})
        await send({"type": "http.response.body", "body": body, "more_body": False})
        if body:
            self._apply_body(record, route, raw_path, decode(body) if decode is not None else body, ok,
                             truncated=False)

    def _apply(self, record: RequestRecord, result: UsageResult, request_info: RequestInfo) -> None:
        if result.model:
            record.model = result.model
        if result.error:
            record.error_message = truncate_message(result.error)
        if result.usage is not None:
            _copy_usage(record, result.usage)
            record.usage_source = "reported"
        elif (record.status_code < 400 and self.router.routes[record.route].provider.always_reports_usage(
                record.request_path)) or (record.status_code < 400 and record.route == "anthropic-openai"):
            record.usage_source = "missing"

    def _apply_body(self, record: RequestRecord, route: Route, raw_path: bytes, body: bytes, ok: bool,
                    truncated: bool) -> None:
        if not ok:
            record.error_message = truncate_message(body.decode("utf-8", "replace"))
            return
        if truncated:
            record.usage_source = "missing"
            return
        self._apply(record, route.provider.parse_response(raw_path.decode("latin-1"), body), RequestInfo())

    def _finish(self, record: RequestRecord) -> None:
        if record.usage_source == "reported":
            try:
                usage = Usage(record.input_tokens, record.output_tokens, record.cached_tokens,
                              record.cache_creation_tokens, record.cache_creation_1h_tokens,
                              record.reasoning_tokens, record.web_search_requests)
                price = self.prices.price(record.provider, record.model, usage, when=record.requested_at)
                record.input_cost = price.input_cost
                record.output_cost = price.output_cost
                record.total_cost = price.total_cost
                record.model_alias_found = price.found
            except Exception:  # pricing must never cost a row
                log.exception("pricing failed for %s/%s", record.provider, record.model)
        self.writer.submit(record)


def _copy_usage(record: RequestRecord, usage: Usage) -> None:
    record.input_tokens = usage.input_tokens
    record.output_tokens = usage.output_tokens
    record.cached_tokens = usage.cached_tokens
    record.cache_creation_tokens = usage.cache_creation_tokens
    record.cache_creation_1h_tokens = usage.cache_creation_1h_tokens
    record.reasoning_tokens = usage.reasoning_tokens
    record.web_search_requests = usage.web_search_requests


async def _read_body(receive: Receive) -> bytes | None:
    message = await receive()
    body = message.get("body", b"")
    if not message.get("more_body", False):
        return body
    parts = [body]
    size = len(body)
    while message.get("more_body", False):
        message = await receive()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_REQUEST_BODY:
            return None
        parts.append(chunk)
    return b"".join(parts)


def _send_now(send: Send, message: MutableMapping[str, Any]) -> asyncio.Future[None] | None:
    """Run ``send(message)`` to completion right here if it does not wait (it only waits when the
    client's socket is full); else return a task that finishes it, in order, once it can."""
    coro = send(message)
    try:
        waiting = coro.send(None)  # type: ignore[attr-defined]
    except StopIteration:
        return None
    return asyncio.ensure_future(_finish_send(coro, waiting))


async def _finish_send(coro: Any, waiting: Any) -> None:
    # What asyncio's Task does for a coroutine that yielded a future: wait for it, then resume.
    while True:
        try:
            if waiting is None:
                await asyncio.sleep(0)
            else:
                await asyncio.wait((waiting,))
        except asyncio.CancelledError:
            coro.close()
            raise
        try:
            waiting = coro.send(None)
        except StopIteration:
            return


async def _watch_disconnect(receive: Receive, disconnected: asyncio.Event) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            disconnected.set()
            return
