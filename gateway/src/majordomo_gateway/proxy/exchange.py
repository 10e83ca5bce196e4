"""The one per-request object the pipeline's steps read and fill in (proxy/pipeline.py)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from majordomo_gateway.providers.base import RequestInfo, StreamUsageParser
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
