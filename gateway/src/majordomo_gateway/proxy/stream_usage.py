"""Exact usage for OpenAI-style streams whose client did not ask for it.

Without ``stream_options.include_usage`` an OpenAI chat (or legacy completions) stream carries no
usage at all, and the row could only say ``missing``.  ``StreamUsageInjector`` adds
``"stream_options": {"include_usage": true}`` to the forwarded body, and ``UsageChunkFilter``
takes out of the relayed stream what that option adds, so the client gets the bytes it would have
got without it:

- the usage-only chunk (``"choices": []`` with a ``usage`` object) before ``data: [DONE]``;
- the ``"usage":null`` that the option adds to every other chunk.

The usage parser still sees the upstream's bytes, usage chunk included.  Enabled by
``proxy.inject_stream_usage`` (default true) on the ``openai`` and ``gemini-openai`` routes.
"""

from __future__ import annotations

import orjson

from majordomo_gateway.providers.base import Provider
from majordomo_gateway.providers.sse import has_object_value
from majordomo_gateway.proxy.adapter import AdaptedRequest, ResponseTransform

__all__ = ["INJECTED_PATHS", "StreamUsageInjector", "UsageChunkFilter", "inject_include_usage"]

#: client paths (as the openai and gemini-openai routes see them) whose streams can report usage
INJECTED_PATHS = frozenset({"/v1/chat/completions", "/v1/completions"})

_INJECTED_FIELD = b'"stream_options":{"include_usage":true},'
_USAGE_KEY = b'"usage"'
# What include_usage adds to every chunk but the last, as OpenAI writes it and as servers using
# Python's default JSON separators write it.
_NULL_USAGE = (b',"usage":null', b', "usage": null')
_EMPTY_CHOICES = (b'"choices":[]', b'"choices": []')
# An event larger than this without a blank line is relayed unfiltered rather than held.
MAX_HELD_BYTES = 8 << 20


def inject_include_usage(body: bytes, include_usage: bool | None) -> bytes:
    """``body`` (a JSON object with ``stream: true``) asking for usage.

    With no ``stream_options`` in the body, the field is spliced in after the opening brace, so
    every other byte the client sent goes upstream unchanged; otherwise the body is re-encoded.
    """
    if include_usage is None:
        start = body.find(b"{")
        if start >= 0 and body[start + 1 :].lstrip()[:1] not in (b"}", b""):
            return body[: start + 1] + _INJECTED_FIELD + body[start + 1 :]
    obj = orjson.loads(body)
    options = obj.get("stream_options")
    options = dict(options) if isinstance(options, dict) else {}
    options["include_usage"] = True
    obj["stream_options"] = options
    return orjson.dumps(obj)


def _boundary_end(data: bytes) -> int:
    """The index just after the last blank line (``\\n\\n`` or ``\\r\\n\\r\\n``) in ``data``; -1 if none."""
    lf = data.rfind(b"\n\n")
    crlf = data.rfind(b"\n\r\n")
    return max(lf + 2 if lf >= 0 else -1, crlf + 3 if crlf >= 0 else -1)


def _events(data: bytes) -> list[bytes]:
    """``data`` (whole events) cut after each blank line, separators kept."""
    events: list[bytes] = []
    start = 0
    size = len(data)
    while start < size:
        lf = data.find(b"\n\n", start)
        crlf = data.find(b"\n\r\n", start)
        ends = [end for end in (lf + 2 if lf >= 0 else -1, crlf + 3 if crlf >= 0 else -1) if end >= 0]
        end = min(ends) if ends else size
        events.append(data[start:end])
        start = end
    return events


def _is_usage_only(event: bytes) -> bool:
    return (_EMPTY_CHOICES[0] in event or _EMPTY_CHOICES[1] in event) and has_object_value(event, _USAGE_KEY)


def _clean(data: bytes) -> bytes:
    """Whole events with the usage-only chunk dropped and ``"usage":null`` removed."""
    if _USAGE_KEY not in data:
        return data
    if _EMPTY_CHOICES[0] in data or _EMPTY_CHOICES[1] in data:
        data = b"".join(event for event in _events(data) if not _is_usage_only(event))
    for null_usage in _NULL_USAGE:
        if null_usage in data:
            data = data.replace(null_usage, b"")
    return data


class UsageChunkFilter:
    """Holds back at most one incomplete event; everything complete goes out at once."""

    __slots__ = ("_held",)

    def __init__(self) -> None:
        self._held = b""

    def feed(self, chunk: bytes) -> bytes:
        data = self._held + chunk if self._held else chunk
        end = _boundary_end(data)
        if end < 0:
            if len(data) > MAX_HELD_BYTES:
                self._held = b""
                return data
            self._held = data
            return b""
        self._held = data[end:]
        return _clean(data[:end])

    def finish(self) -> bytes:
        rest, self._held = self._held, b""
        return _clean(rest) if rest else b""


def _filter(status: int, content_type: str) -> ResponseTransform | None:
    if status >= 400 or not content_type.startswith("text/event-stream"):
        return None  # an error answered as JSON: relayed as is
    return UsageChunkFilter()


class StreamUsageInjector:
    """The route adapter: only streamed chat/completions requests without include_usage change."""

    __slots__ = ()

    def adapt(self, provider: Provider, path: str, body: bytes,
              headers: list[tuple[str, str]]) -> AdaptedRequest:
        info = provider.request_info(path, body)
        if not info.stream or info.include_usage or path.rstrip("/") not in INJECTED_PATHS:
            return AdaptedRequest(info=info, body=body, headers=headers)
        try:
            injected = inject_include_usage(body, info.include_usage)
        except (orjson.JSONDecodeError, TypeError):
            return AdaptedRequest(info=info, body=body, headers=headers)
        return AdaptedRequest(info=info, body=injected, headers=headers, response=_filter)
