"""The one per-request object the pipeline's steps read and fill in (proxy/pipeline.py)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from majordomo_gateway.providers.base import RequestInfo, StreamUsageParser, UsageResult
from majordomo_gateway.proxy.adapter import AdaptedRequest
from majordomo_gateway.proxy.headers import ClientHeaders
from majordomo_gateway.proxy.routing import Route
from majordomo_gateway.storage.records import KeyRecord, ProxyKeyRecord, RequestRecord

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


@dataclass(slots=True, eq=False)
class Exchange:
    """One request and its answer, as far as the pipeline has got.  A step only reads fields an
    earlier step filled in; the defaults are what "not yet" looks like."""

    scope: Scope
    receive: Receive
    send: Send
    #: perf_counter() at arrival (for durations) and the wall clock then (for the row)
    started: float
    requested_at: datetime
    path: str = ""
    raw_path: bytes = b""
    query: bytes = b""
    headers: ClientHeaders = field(default_factory=ClientHeaders)
    key: KeyRecord | None = None
    #: the provider key the client sent, where its provider's SDK puts it (None: none sent)
    credential: str | None = None
    #: a proxy key's: the record, and the SHA-256 of the stored provider key sent in its place
    proxy_key: ProxyKeyRecord | None = None
    credential_hash: str | None = None
    route: Route | None = None
    body: bytes = b""
    request_info: RequestInfo = field(default_factory=RequestInfo)
    adapted: AdaptedRequest | None = None
    #: what goes upstream: the client's path and headers unless the route's adapter changed them
    upstream_path: bytes = b""
    forward: list[tuple[str, str]] = field(default_factory=list)
    #: the row; None until there is one to write (errors before routing write none)
    record: RequestRecord | None = None
    # -- filled in by the relay, read by metering --------------------------------------------
    parser: StreamUsageParser | None = None
    #: the response body (decoded) kept for usage or the error message, and whether it was cut
    captured: list[bytes] = field(default_factory=list)
    truncated: bool = False
    #: why the upstream's body stopped before its end, when it did
    upstream_broken: str | None = None
    #: what the response said (usage, model, id, finish reasons), once metered
    result: UsageResult | None = None
    # -- for metrics and traces ---------------------------------------------------------------
    #: perf_counter() when the request went upstream and when its last byte came back (0: not yet)
    upstream_started: float = 0.0
    upstream_ended: float = 0.0
    #: the kind of upstream failure (metrics' majordomo_upstream_errors_total ``kind``)
    upstream_error: str | None = None
    #: the request's trace span while tracing is on (tracing/spans.py)
    span: Any = None
    #: what the request holds against budgets and rate limits until settled (budgets/guard.py)
    budget_hold: Any = None

    def upstream_seconds(self, now: float) -> float:
        """How long the upstream had the request: from sending it to its last byte."""
        if not self.upstream_started:
            return 0.0
        return (self.upstream_ended or now) - self.upstream_started
