"""The hook for routes that change what crosses the gateway.

Most routes relay the client's request and the upstream's answer byte for byte.  A route may
instead carry a ``RouteAdapter``, which gets the request once, before it goes upstream, and may
rewrite its path, headers and body; and which may hand back, once the upstream's status and
content type are known, a ``ResponseTransform`` that turns the upstream's bytes into the bytes
the client gets.  The usage parser always sees the upstream's original bytes, so what is
recorded is what the provider reported, whatever the client receives.

    adapted = route.adapter.adapt(route.provider, path, body, forward_headers)
    # ... request adapted.path / adapted.headers / adapted.body upstream ...
    transform = adapted.response(status, content_type) if adapted.response else None
    client_bytes = transform.feed(upstream_chunk)   # for each chunk, possibly b""
    client_bytes = transform.finish()               # after a clean end of the upstream body

Adapters are shared by all requests: per-request state lives in the transforms they return.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from majordomo_gateway.providers.base import Provider, RequestInfo

__all__ = ["AdaptedRequest", "AdapterError", "ResponseTransform", "RouteAdapter"]


class AdapterError(Exception):
    """The request cannot be adapted; the client gets a 400 with ``code`` and ``message``."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class ResponseTransform(Protocol):
    """Turns one upstream response body into the body the client gets.

    ``feed`` gets each chunk (already decompressed) and returns what to send now, possibly
    ``b""``; ``finish`` is called once after the upstream body ended cleanly and returns the rest.
    When a transform is active the gateway drops ``Content-Length`` and ``Content-Encoding``
    from the relayed headers.
    """

    def feed(self, chunk: bytes) -> bytes: ...

    def finish(self) -> bytes: ...


@dataclass(slots=True)
class AdaptedRequest:
    """What goes upstream instead of the client's request, and how to treat the answer."""

    #: model and streaming flag, as the gateway records them
    info: RequestInfo
    body: bytes
    headers: list[tuple[str, str]]
    #: the upstream path (raw, before the route's base URL) when it is not the client's
    path: bytes | None = None
    #: (status, content type) -> the transform for the response body, or None to relay it as is
    response: Callable[[int, str], ResponseTransform | None] | None = None


class RouteAdapter(Protocol):
    def adapt(self, provider: Provider, path: str, body: bytes,
              headers: list[tuple[str, str]]) -> AdaptedRequest:
        """The request to send upstream.  Raise AdapterError for a request it cannot serve."""
        ...
