"""One proxied request, start to finish, as named steps over one ``Exchange``:

    admit → accept → route → authenticate → read_body → prepare → authorize → forward → relay → meter → price
    → record

- admit: a counter and a flag, nothing else.  While ``proxy.max_in_flight`` requests are being
  served by this worker (streams included, until their last byte), or while the writer says rows
  cannot be recorded (``writer.on_spool_failure: refuse``), the request is refused: it still goes
  through accept, route and authenticate (so the refusal has a key, a route and the provider's
  error shape), then gets a 503 with ``Retry-After`` and a row, without reading its body or
  reaching the upstream.  Only admission is bounded: a stream already flowing is never cut;
- accept: the client's headers, split into what goes upstream and what is for Majordomo;
- route: which provider, from the path or the X-Majordomo-Provider header (resolved before
  authenticate, which needs to know where the provider's SDK put its key; a routing error is
  raised after it, so an unauthenticated request still gets its 401 first);
- authenticate: the X-Majordomo-Key, through the key cache, or a proxy key (``mdm_pk_...``) where
  the provider key goes, through the vault (auth/vault.py), which then puts the stored provider
  key in its place; and the key's expiry.  Only a credential starting ``mdm_pk_`` takes the vault's path: for every
  other request the cost is one ``startswith``;
- read_body: the request body, bounded; a client that hangs up before its body is complete
  gets nothing forwarded, and a 499 row (``_body_cut_short``);
- prepare: what goes upstream (a route adapter may rewrite it), what the request asked for
  (model, streaming), and the row;
- authorize: the key's allowed providers and models, for keys that have rules;
- forward: the request upstream, until the response head is in;
- relay: the answer to the client (proxy/relay.py), the usage parser watching;
- meter, price: usage and cost onto the row, after the client has its last byte (proxy/metering.py);
- record: the row to the writer.

A step that cannot go on raises GatewayError; ``ProxyHandler.__call__`` is the one place that
sends it and, when the request has a row by then, records it.  The relay never waits on usage
parsing, pricing or the database.

A route may carry an adapter (proxy/adapter.py) that rewrites the request before it goes
upstream and transforms the response bytes on their way to the client (the anthropic-openai
translation, the stream-usage injection); the usage parser still sees the upstream's bytes.
"""

from __future__ import annotations

import time
from datetime import timedelta
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl, urlencode

import uuid_utils

from majordomo_gateway.auth.cache import KeyCache, KeyCheck, KeyStatus
from majordomo_gateway.auth.key_rules import refusal
from majordomo_gateway.auth.keys import hash_secret
from majordomo_gateway.auth.proxy_keys import PROXY_KEY_PREFIX
from majordomo_gateway.auth.secrets import SecretsError
from majordomo_gateway.auth.vault import ProxyKeyCheck, ProxyKeyVault
from majordomo_gateway.clock import Clock, utc_now
from majordomo_gateway.config import ProxySettings, Settings
from majordomo_gateway.logs.access import log_access
from majordomo_gateway.metrics.process import ProcessMetrics
from majordomo_gateway.pricing import PriceBook
from majordomo_gateway.providers.base import RequestInfo
from majordomo_gateway.proxy.adapter import AdapterError
from majordomo_gateway.proxy.errors import GatewayError
from majordomo_gateway.proxy.exchange import Exchange, Receive, Scope, Send
from majordomo_gateway.proxy.headers import MetadataError, split_headers
from majordomo_gateway.proxy.metering import meter, price
from majordomo_gateway.proxy.relay import relay
from majordomo_gateway.proxy.routing import Router, RoutingError, normalise_path
from majordomo_gateway.proxy.stream_usage import StreamUsageInjector
from majordomo_gateway.proxy.upstream import UpstreamClient, UpstreamError, UpstreamProtocolError, UpstreamTimeout
from majordomo_gateway.proxy.upstream_api import Upstream, UpstreamAnswer
from majordomo_gateway.storage.database import DatabaseUnavailable
from majordomo_gateway.storage.records import KeyRecord, RequestRecord, truncate_message
from majordomo_gateway.storage.writer import RowWriter

if TYPE_CHECKING:  # budgets/guard.py imports the pipeline's parts: at run time the handler is given one
    from majordomo_gateway.budgets.guard import BudgetGuard
    from majordomo_gateway.tracing.otel import Tracing

__all__ = ["MAX_MODEL_CHARS", "MAX_REQUEST_BODY", "OVERLOAD_RETRY_AFTER", "UNRECORDED_RETRY_AFTER", "ProxyHandler",
           "accept", "authenticate", "authorize", "finish_timings", "forward", "new_record", "prepare", "read_body",
           "route", "try_route"]

MAX_REQUEST_BODY = 64 * 1024 * 1024
# Retry-After, in seconds: an overload passes with the burst; a full disk or a dead database
# takes longer, and retrying every second would only add refusals.
OVERLOAD_RETRY_AFTER = 1
UNRECORDED_RETRY_AFTER = 5
_CREDENTIAL_QUERY_KEYS = frozenset({"key"})
# The longest model name a row keeps (a longer one, which no provider serves, is cut, marked with
# "…"): with the metadata limits it bounds a row (tests/gateway/test_row_limits.py).
MAX_MODEL_CHARS = 1024


class ProxyHandler:
    """The proxy's ASGI callable.  ``upstream`` is the client requests go out through; by default
    (None) a real UpstreamClient, made at start() and closed at close().  ``clock`` stamps each
    request's ``requested_at`` (``majordomo demo`` replays a week in seconds through it)."""

    def __init__(self, settings: Settings, router: Router, keys: KeyCache, writer: RowWriter,
                 prices: PriceBook, upstream: Upstream | None = None, clock: Clock = utc_now,
                 vault: ProxyKeyVault | None = None, metrics: ProcessMetrics | None = None,
                 tracing: Tracing | None = None, budgets: BudgetGuard | None = None) -> None:
        self.settings = settings
        #: budgets and rate limits (budgets/guard.py); while none is defined, ``active`` is False
        #: and a request pays that one test
        self.budgets = budgets
        #: this worker's Prometheus numbers (None: metrics.enabled is false, and requests pay nothing)
        self.metrics = metrics
        #: OpenTelemetry spans and metrics (None: off, and requests pay nothing)
        self.tracing = tracing
        #: log.format json: one access-log line per request
        self.access_log = settings.log.format == "json"
        self.clock = clock
        self.limits = settings.proxy
        self.router = router
        self.keys = keys
        #: proxy keys; None answers every proxy-key request with "no vault" (tests, benchmarks)
        self.vault = vault
        self.writer = writer
        self.prices = prices
        self.upstream: Upstream | None = upstream
        self._owns_upstream = upstream is None
        #: requests admitted and not yet finished (their last byte sent or their error answered)
        self.in_flight = 0
        self.max_in_flight = settings.proxy.max_in_flight
        if settings.proxy.inject_stream_usage:
            injector = StreamUsageInjector()
            for name in router.routes_of_kind("openai"):
                router.set_adapter(name, injector)

    async def start(self) -> None:
        if self._owns_upstream:
            self.upstream = UpstreamClient(connect_timeout=self.limits.connect_timeout,
                                           read_timeout=self.limits.read_timeout)

    async def close(self) -> None:
        if self._owns_upstream and self.upstream is not None:
            await self.upstream.close()
            self.upstream = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        ex = Exchange(scope, receive, send, time.perf_counter(), self.clock())
        # admit: what an admitted request pays for admission control is this test and the two
        # counter updates (no lock: one event loop per worker).
        if self.in_flight >= self.max_in_flight or self.writer.refusing:
            # The reason is taken now: the writer's flag may change while the key is looked up.
            await self._refuse(ex, self._refusal())
            return
        self.in_flight += 1
        try:
            await self._steps(ex)
        except GatewayError as error:
            await self._fail(ex, error)
        finally:
            self.in_flight -= 1
            self._record(ex)

    def _record(self, ex: Exchange) -> None:
        record = ex.record
        if record is not None:
            meter(ex)
            finish_timings(record, ex.started)
            price(record, self.prices)
            if ex.budget_hold is not None and self.budgets is not None:
                self.budgets.settle(ex)
            tracing = self.tracing
            if tracing is not None:
                tracing.finish(ex, record)
            if self.metrics is not None:
                self.metrics.observe(record, ex.upstream_seconds(time.perf_counter()), ex.upstream_error)
            if self.access_log:
                log_access(record, tracing.trace_ids(ex) if tracing is not None else None)
            self.writer.submit(record)

    async def _refuse(self, ex: Exchange, refusal: GatewayError) -> None:
        """A 503 with Retry-After and a row, after only the steps that say whose request it is."""
        try:
            accept(ex, self.limits)
            unroutable = try_route(ex, self.router)
            await authenticate(ex, self.keys, self.vault)
            if unroutable is not None:
                raise unroutable
            ex.record = new_record(ex, RequestInfo())
            raise refusal
        except GatewayError as error:
            await self._fail(ex, error)
        finally:
            self._record(ex)

    def _refusal(self) -> GatewayError:
        if self.writer.refusing:
            return GatewayError(503, "not_recorded",
                                "Majordomo cannot record requests right now (its database is down and its spool "
                                "cannot be written), so it refuses them rather than serve them unrecorded. "
                                f"Retry in {UNRECORDED_RETRY_AFTER} s.",
                                record_message="refused, not recorded: database down and spool not writable "
                                               "(writer.on_spool_failure=refuse)",
                                retry_after=UNRECORDED_RETRY_AFTER)
        return GatewayError(503, "overloaded",
                            f"Majordomo is overloaded: this worker is already serving {self.max_in_flight} "
                            f"requests (proxy.max_in_flight). Retry in {OVERLOAD_RETRY_AFTER} s.",
                            record_message=f"overloaded: refused at {self.in_flight} requests in flight "
                                           f"(proxy.max_in_flight={self.max_in_flight})",
                            retry_after=OVERLOAD_RETRY_AFTER)

    async def _steps(self, ex: Exchange) -> None:
        accept(ex, self.limits)
        unroutable = try_route(ex, self.router)
        await authenticate(ex, self.keys, self.vault)
        if unroutable is not None:
            raise unroutable
        await read_body(ex)
        prepare(ex)
        key = ex.key
        assert key is not None
        if key.allowed_providers is not None or key.model_pattern is not None:
            authorize(ex, key)  # only keys with rules pay for them (docs/performance.md)
        budgets = self.budgets
        if budgets is not None and budgets.active:
            # Before anything is forwarded, on every route (translations, streams, custom
            # providers): nothing reaches a provider but through here.
            await budgets.admit(ex)
        if self.tracing is not None:
            self.tracing.start(ex)
        assert self.upstream is not None, "ProxyHandler.start() was not awaited"
        response = await forward(ex, self.upstream)
        async with response:
            await relay(ex, response, self.limits)

    async def _fail(self, ex: Exchange, error: GatewayError) -> None:
        shape = ex.route
        if shape is None and ex.path:
            shape = self.router.error_route(ex.path, ex.raw_path, ex.headers.provider)
        record = ex.record
        if record is None:
            if self.metrics is not None:
                self.metrics.unrecorded(error.status, shape)
            await error.send(ex.send, shape)
            return
        record.status_code = error.status
        if error.record_message is not None:
            record.error_message = error.record_message
        await error.send(ex.send, shape, [(b"x-majordomo-request-id", record.id.encode())])


def accept(ex: Exchange, limits: ProxySettings) -> None:
    scope = ex.scope
    # The path first: an error below is shaped for the provider the path names.
    raw_path: bytes = scope.get("raw_path") or scope["path"].encode("utf-8")
    if b"%" in raw_path:
        # One path for routing, billing, the upstream and the row: the server's decoded `path`
        # would route /v1/chat/completion%73 as chat completions while the raw one bills nothing.
        raw_path = normalise_path(raw_path)
        ex.path = raw_path.decode("latin-1")
    else:
        ex.path = scope["path"]
    ex.raw_path = raw_path
    ex.query = scope.get("query_string", b"")
    try:
        ex.headers = split_headers(scope["headers"], limits)
    except MetadataError as exc:
        raise GatewayError(400, "invalid_metadata", str(exc)) from exc


async def authenticate(ex: Exchange, keys: KeyCache, vault: ProxyKeyVault | None = None) -> None:
    """``ex.key`` from the X-Majordomo-Key or a proxy key; call after route (it reads ``ex.credential``)."""
    credential = ex.credential
    proxy: ProxyKeyCheck | None = None
    if credential is not None and credential.startswith(PROXY_KEY_PREFIX):
        proxy = await _check_proxy_key(credential, vault)
        check = await _proxy_key_owner(ex, proxy, keys)
    else:
        presented = ex.headers.majordomo_key
        if not presented:
            raise GatewayError(401, "missing_majordomo_key",
                               "Missing X-Majordomo-Key header: send your Majordomo API key (mdm_sk_...), or a "
                               "proxy key (mdm_pk_...) as the provider key. Create one with "
                               "`majordomo keys create --name NAME`.")
        check = await _check_key(presented, keys)
    if check.status is KeyStatus.UNKNOWN:
        raise GatewayError(401, "invalid_majordomo_key", "Invalid X-Majordomo-Key: no such Majordomo API key.")
    if check.status is KeyStatus.REVOKED:
        if proxy is not None and not ex.headers.majordomo_key:
            raise GatewayError(401, "revoked_majordomo_key",
                               "Revoked Majordomo API key: the key this proxy key belongs to has been revoked.")
        raise GatewayError(401, "revoked_majordomo_key",
                           "Revoked X-Majordomo-Key: this Majordomo API key has been revoked.")
    key = check.key
    assert key is not None
    if key.expires_at is not None and key.expires_at <= ex.requested_at:
        raise GatewayError(401, "expired_majordomo_key",
                           f"Expired Majordomo API key: this key expired at {key.expires_at.isoformat()}. "
                           "Ask an admin for a new key, or for a later expiry (`majordomo keys update ID --expires "
                           "30d`).")
    ex.key = key
    if proxy is not None:
        _use_provider_key(ex, proxy, vault)


def authorize(ex: Exchange, key: KeyRecord) -> None:
    """The key's provider and model rules (auth/key_rules.py), once the model is known.  A refusal
    is a 403 naming the rule, and the request's row records it."""
    assert ex.route is not None
    refused = refusal(key, ex.route.provider.name, ex.request_info.model)
    if refused is not None:
        code, message = refused
        raise GatewayError(403, code, f"Forbidden: {message}.", record_message=f"refused: {message}")


_NO_QUERY: dict[str, str] = {}


async def _check_key(presented: str, keys: KeyCache) -> KeyCheck:
    try:
        return await keys.check(presented)
    except DatabaseUnavailable as exc:
        raise GatewayError(503, "database_unavailable",
                           "Majordomo cannot verify the API key: its database is unavailable. Retry shortly.") from exc


async def _check_proxy_key(presented: str, vault: ProxyKeyVault | None) -> ProxyKeyCheck:
    if vault is None or vault.keyring is None:
        # Checked first: without the secrets key no proxy key can work, whatever the database says.
        reason = vault.keyring_error if vault is not None else "this gateway has no proxy-key vault"
        raise GatewayError(500, "secrets_key_missing", f"Majordomo cannot use proxy keys: {reason}")
    try:
        proxy = await vault.check(presented)
    except DatabaseUnavailable as exc:
        raise GatewayError(503, "database_unavailable",
                           "Majordomo cannot verify the proxy key: its database is unavailable. Retry shortly."
                           ) from exc
    if proxy.status is KeyStatus.UNKNOWN:
        raise GatewayError(401, "invalid_proxy_key", "Invalid proxy key: no such Majordomo proxy key (mdm_pk_...).")
    if proxy.status is KeyStatus.REVOKED:
        raise GatewayError(401, "revoked_proxy_key", "Revoked proxy key: this Majordomo proxy key has been revoked.")
    return proxy


async def _proxy_key_owner(ex: Exchange, proxy: ProxyKeyCheck, keys: KeyCache) -> KeyCheck:
    """The Majordomo key a proxy-key request is recorded under: the proxy key's own, which an
    X-Majordomo-Key sent along must be."""
    presented = ex.headers.majordomo_key
    if not presented:
        return proxy.owner
    check = await _check_key(presented, keys)
    assert proxy.proxy_key is not None
    if check.key is not None and check.key.id != proxy.proxy_key.majordomo_api_key_id:
        raise GatewayError(403, "proxy_key_mismatch",
                           f"The proxy key {proxy.proxy_key.name!r} belongs to another Majordomo key than the "
                           "X-Majordomo-Key sent with it: send the two that belong together, or the proxy key "
                           "alone.")
    return check


def _use_provider_key(ex: Exchange, proxy: ProxyKeyCheck, vault: ProxyKeyVault | None) -> None:
    chosen, record = ex.route, proxy.proxy_key
    assert chosen is not None and record is not None and vault is not None
    provider = chosen.provider
    stored = proxy.providers.get(provider.name)
    if stored is None:
        raise GatewayError(400, "no_provider_key",
                           f"The proxy key {record.name!r} has no {provider.name} key stored, and this request "
                           f"goes to {provider.name}. Store one with `majordomo proxy-keys set-provider "
                           f"{record.id} {provider.name}` (the key on standard input).")
    try:
        secret = vault.provider_key(record, stored)
    except SecretsError as exc:
        raise GatewayError(500, "provider_key_unreadable",
                           f"Majordomo cannot decrypt the {provider.name} key of proxy key {record.name!r}: {exc}"
                           ) from exc
    headers = ex.headers
    headers.forward, ex.query = provider.with_credential(headers.forward, ex.query, secret)
    ex.proxy_key, ex.credential_hash = record, stored.key_hash


def try_route(ex: Exchange, router: Router) -> GatewayError | None:
    """``route``, with its error returned rather than raised (authenticate's errors come first)."""
    try:
        route(ex, router)
    except GatewayError as error:
        return error
    return None


def route(ex: Exchange, router: Router) -> None:
    """The route, and the provider key the client sent where that provider's SDKs put it."""
    try:
        chosen = ex.route = router.resolve(ex.path, ex.raw_path, ex.headers.provider)
    except RoutingError as exc:
        raise GatewayError(400, exc.code, exc.message) from exc
    query = ex.query
    ex.credential = chosen.provider.credential(
        ex.headers.lowered, dict(parse_qsl(query.decode("latin-1"))) if query else _NO_QUERY)


async def read_body(ex: Exchange) -> None:
    receive = ex.receive
    message = await receive()
    if message["type"] != "http.request":
        _body_cut_short(ex, 0)
    body: bytes = message.get("body", b"")
    if message.get("more_body", False):
        parts = [body]
        size = len(body)
        while message.get("more_body", False):
            message = await receive()
            if message["type"] != "http.request":
                _body_cut_short(ex, size)
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > MAX_REQUEST_BODY:
                raise GatewayError(413, "request_too_large", f"request body over {MAX_REQUEST_BODY} bytes")
            parts.append(chunk)
        body = b"".join(parts)
    ex.body = body


def _body_cut_short(ex: Exchange, received: int) -> None:
    """The client hung up before its body was complete (``http.disconnect``): what arrived is not
    the request it meant, so nothing goes upstream.  The row says so (status 499, the nginx code
    for a client that closed its request; aborted; no model, no tokens): the attempt is seen,
    and it cost nothing."""
    record = ex.record = new_record(ex, RequestInfo())
    record.aborted = True
    raise GatewayError(499, "client_disconnected", "The client closed the connection before its request body "
                       "was complete.",
                       record_message=f"client disconnected after {received} bytes of its request body; "
                                      "not forwarded")


def prepare(ex: Exchange) -> None:
    """What goes upstream, what the request asked for, and the row (from here on, one is due)."""
    chosen, headers, path = ex.route, ex.headers, ex.path
    assert chosen is not None and ex.key is not None
    provider = chosen.provider
    ex.upstream_path, ex.forward = ex.raw_path, headers.forward
    if chosen.adapter is None:
        ex.request_info = provider.request_info(path, ex.body)
    else:
        try:
            adapted = chosen.adapter.adapt(provider, path, ex.body, headers.forward)
        except AdapterError as exc:
            raise GatewayError(400, exc.code, exc.message) from exc
        ex.adapted, ex.request_info = adapted, adapted.info
    info = ex.request_info
    if headers.provider is None and chosen.name == "openai" and (info.model or "").startswith("gemini"):
        # OpenAI would answer with a confusing 401/404; the guide's Gemini trap deserves a clear 400.
        raise GatewayError(400, "gemini_model_on_openai_route",
                           f"Model {info.model!r} is a Gemini model, but without an X-Majordomo-Provider "
                           "header this path goes to OpenAI. Send X-Majordomo-Provider: gemini-openai "
                           "(majordomo_frameworks' build_extra_headers_gemini() does this).")
    ex.record = new_record(ex, info)
    if ex.adapted is not None:
        ex.body, ex.forward = ex.adapted.body, ex.adapted.headers
        ex.upstream_path = ex.adapted.path or ex.raw_path


def new_record(ex: Exchange, info: RequestInfo) -> RequestRecord:
    """The request's row, once it is known whose request it is and where it goes."""
    chosen, headers, query = ex.route, ex.headers, ex.query
    assert chosen is not None and ex.key is not None
    provider = chosen.provider
    credential, credential_hash, alias = ex.credential, ex.credential_hash, headers.provider_alias
    if ex.proxy_key is not None:
        alias = ex.proxy_key.name  # the stored key's hash was set by authenticate
    elif credential:
        credential_hash = hash_secret(credential)
    return RequestRecord(
        id=str(uuid_utils.uuid7()),
        majordomo_api_key_id=ex.key.id,
        provider_api_key_hash=credential_hash,
        provider_api_key_alias=alias,
        provider=provider.name,
        route=chosen.name,
        model=info.model if info.model is None or len(info.model) <= MAX_MODEL_CHARS
        else truncate_message(info.model, MAX_MODEL_CHARS),
        request_path=_logged_path(ex.path, query),
        request_method=ex.scope["method"],
        requested_at=ex.requested_at,
        responded_at=ex.requested_at,
        response_time_ms=0.0,
        streamed=info.stream,
        raw_metadata=headers.metadata,
    )


async def forward(ex: Exchange, upstream: Upstream) -> UpstreamAnswer:
    chosen = ex.route
    assert chosen is not None
    label = chosen.name
    ex.upstream_started = time.perf_counter()
    try:
        return await upstream.request(chosen.origin, ex.scope["method"],
                                      chosen.upstream_target(ex.upstream_path, ex.query), ex.forward, ex.body)
    except UpstreamTimeout as exc:
        ex.upstream_error = "timeout"
        raise GatewayError(504, "upstream_timeout", f"The {label} upstream did not answer in time.",
                           provider=label, record_message=f"{label} upstream timed out") from exc
    except UpstreamProtocolError as exc:
        ex.upstream_error = "unreachable"  # the metric's kinds: no answer that could be used
        raise GatewayError(502, "upstream_bad_response", f"The {label} upstream sent an answer that cannot be "
                           f"relayed: {exc}.", provider=label,
                           record_message=truncate_message(f"{label} upstream: {exc}")) from exc
    except UpstreamError as exc:
        ex.upstream_error = "unreachable"
        raise GatewayError(502, "upstream_unreachable", f"The {label} upstream could not be reached.",
                           provider=label,
                           record_message=truncate_message(f"{label} upstream unreachable: {exc}")) from exc


def finish_timings(record: RequestRecord, started: float) -> None:
    elapsed = time.perf_counter() - started
    record.response_time_ms = round(elapsed * 1000, 3)
    record.responded_at = record.requested_at + timedelta(seconds=elapsed)


def _logged_path(path: str, query: bytes) -> str:
    if not query:
        return path
    pairs = parse_qsl(query.decode("latin-1"), keep_blank_values=True)
    kept = [(k, v) for k, v in pairs if k not in _CREDENTIAL_QUERY_KEYS]
    return f"{path}?{urlencode(kept)}" if kept else path
