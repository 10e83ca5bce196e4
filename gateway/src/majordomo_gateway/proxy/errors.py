"""Errors the gateway answers itself (as opposed to relaying the provider's).

The body is shaped as the client's SDK expects its provider's errors (``Provider.error_body``:
OpenAI's ``{"error": {...}}``, Anthropic's ``{"type": "error", "error": {...}}``, Google's
``{"error": {"code", "message", "status", "details"}}``), so that every SDK raises its usual
exception with our message.  A request that fails before any route is known (an unknown path)
gets ``neutral_error_body``, which the OpenAI and Anthropic SDKs both read.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from typing import Any, Protocol

import orjson

Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


class ErrorShape(Protocol):
    """Whatever shapes an error body: a provider, or a route (which may speak another's format)."""

    def error_body(self, status: int, code: str, message: str, extra: Mapping[str, object]) -> bytes: ...


def neutral_error_body(status: int, code: str, message: str, extra: Mapping[str, object]) -> bytes:
    error: dict[str, object] = {"type": _NEUTRAL_TYPES.get(status, "api_error"), "code": code, "message": message}
    error.update(extra)
    return orjson.dumps({"type": "error", "error": error})


_NEUTRAL_TYPES = {400: "invalid_request_error", 401: "authentication_error", 404: "not_found_error",
                  408: "timeout_error", 413: "request_too_large", 431: "request_too_large",
                  502: "upstream_error", 503: "service_unavailable", 504: "upstream_timeout"}


async def send_json(send: Send, status: int, body: bytes,
                    extra_headers: list[tuple[bytes, bytes]] | None = None) -> None:
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if extra_headers:
        headers.extend(extra_headers)
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class GatewayError(Exception):
    """A request the gateway answers itself, in the client's provider's error shape.

    Raised by any pipeline step; proxy/pipeline.py catches it in one place, sends it, and, when the
    request already has a row, records it with ``status`` (and ``record_message``, when set, as
    the row's error message).  ``provider`` names the route in the body for upstream failures;
    ``retry_after`` (seconds), when set, is sent as ``Retry-After``, which the SDKs' retries honour.
    """

    def __init__(self, status: int, code: str, message: str, *, provider: str | None = None,
                 record_message: str | None = None, retry_after: int | None = None,
                 details: Mapping[str, object] | None = None, should_retry: bool | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.provider = provider
        self.record_message = record_message
        self.retry_after = retry_after
        #: further fields of the error object (a budget's scope, limit, spend, reset time)
        self.details = details
        #: False sends ``x-should-retry: false``, which the OpenAI and Anthropic SDKs obey: a used-up
        #: budget stays used up, and retrying would only add refusals
        self.should_retry = should_retry

    def body(self, shape: ErrorShape | None) -> bytes:
        extra: dict[str, object] = {} if self.provider is None else {"provider": self.provider}
        if self.details:
            extra.update(self.details)
        if shape is None:
            return neutral_error_body(self.status, self.code, self.message, extra)
        return shape.error_body(self.status, self.code, self.message, extra)

    async def send(self, send: Send, shape: ErrorShape | None = None,
                   extra_headers: list[tuple[bytes, bytes]] | None = None) -> None:
        if self.retry_after is not None:
            extra_headers = [*(extra_headers or ()), (b"retry-after", str(self.retry_after).encode())]
        if self.should_retry is not None:
            extra_headers = [*(extra_headers or ()), (b"x-should-retry", b"true" if self.should_retry else b"false")]
        await send_json(send, self.status, self.body(shape), extra_headers)
