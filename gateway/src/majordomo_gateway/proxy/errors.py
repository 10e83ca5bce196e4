"""Error responses the gateway itself produces (as opposed to relaying the provider's).

The body is shaped so that both official SDKs surface our message: OpenAI's and Anthropic's
clients both read ``error.message``, and Anthropic's also reads ``type: "error"``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import orjson

Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


def error_body(status: int, code: str, message: str, **extra: object) -> bytes:
    error: dict[str, object] = {"type": _ERROR_TYPES.get(status, "api_error"), "code": code,
                                "message": message}
    error.update(extra)
    return orjson.dumps({"type": "error", "error": error})


_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    404: "not_found_error",
    413: "request_too_large",
    502: "upstream_error",
    503: "service_unavailable",
    504: "upstream_timeout",
}


async def send_json(send: Send, status: int, body: bytes,
                    extra_headers: list[tuple[bytes, bytes]] | None = None) -> None:
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if extra_headers:
        headers.extend(extra_headers)
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def send_error(send: Send, status: int, code: str, message: str,
                     extra_headers: list[tuple[bytes, bytes]] | None = None, **extra: object) -> None:
    await send_json(send, status, error_body(status, code, message, **extra), extra_headers)


class GatewayError(Exception):
    """A request the gateway answers itself, with a provider-shaped error (see ``send_error``).

    Raised by any pipeline step; proxy/pipeline.py catches it in one place, sends it, and, when the
    request already has a row, records it with ``status`` (and ``record_message``, when set, as
    the row's error message).  ``provider`` names the route in the body for upstream failures.
    """

    def __init__(self, status: int, code: str, message: str, *, provider: str | None = None,
                 record_message: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.provider = provider
        self.record_message = record_message

    async def send(self, send: Send, extra_headers: list[tuple[bytes, bytes]] | None = None) -> None:
        if self.provider is None:
            await send_error(send, self.status, self.code, self.message, extra_headers)
        else:
            await send_error(send, self.status, self.code, self.message, extra_headers, provider=self.provider)
