"""Anthropic's wire format: the Messages API, plain and streamed."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import ClassVar

import orjson

from majordomo_gateway.providers.base import RequestInfo, StreamUsageParser, UsageResult, swap_headers
from majordomo_gateway.providers.sse import (
    Counts,
    SSEFramer,
    error_text,
    event_name,
    json_object,
    looks_like_sse,
    parse_event,
)
from majordomo_gateway.usage import InvalidUsage, Usage

__all__ = ["AnthropicProvider", "usage_from_anthropic"]

# Usage fields that change the price of the same token counts; passed on in UsageResult.extra.
_PRICING_HINTS = ("service_tier", "inference_geo", "speed")

_MESSAGE_START = b"message_start"
_MESSAGE_DELTA = b"message_delta"
_ERROR = b"error"
_MESSAGE_STOP = b"message_stop"
_WANTED = tuple(
    prefix + name for prefix in (b"event: ", b"event:") for name in (_MESSAGE_START, _MESSAGE_DELTA, _ERROR)
)
_STOP = (b"event: message_stop", b"event:message_stop")


def _bare_path(path: str) -> str:
    return path.partition("?")[0].rstrip("/")


def _reports_usage(path: str) -> bool:
    # Only message creation is billed; /v1/messages/count_tokens and the batch endpoints are not
    # (batch results are billed, but fetched as a JSONL file this gateway does not meter).
    return _bare_path(path).endswith("/messages")


def usage_from_anthropic(usage: Mapping[str, object]) -> Usage:
    """Our Usage from an Anthropic ``usage`` object.

    Anthropic reports uncached input, cache reads and cache writes as three disjoint counts; our
    ``input_tokens`` is their sum.  Thinking is billed inside ``output_tokens``; newer API
    versions also break it out in ``output_tokens_details.thinking_tokens``, which is used when
    present (older responses leave ``reasoning_tokens`` at 0).  Raises InvalidUsage when a count
    is not a count (sse.as_count).
    """
    count = Counts()
    uncached = count.get(usage, "input_tokens")
    reads = count.get(usage, "cache_read_input_tokens")
    writes = count.get(usage, "cache_creation_input_tokens")
    output = count.get(usage, "output_tokens")
    writes_1h = 0
    cache_creation = usage.get("cache_creation")
    if isinstance(cache_creation, Mapping):
        writes_1h = count.get(cache_creation, "ephemeral_1h_input_tokens", "cache_creation.")
    web_searches = 0
    server_tools = usage.get("server_tool_use")
    if isinstance(server_tools, Mapping):
        web_searches = count.get(server_tools, "web_search_requests", "server_tool_use.")
    thinking = 0
    out_details = usage.get("output_tokens_details")
    if isinstance(out_details, Mapping):
        thinking = count.get(out_details, "thinking_tokens", "output_tokens_details.")
    count.check()
    return Usage(
        input_tokens=uncached + reads + writes,
        output_tokens=output,
        cached_tokens=reads,
        cache_creation_tokens=writes,
        cache_creation_1h_tokens=writes_1h,
        reasoning_tokens=thinking,
        web_search_requests=web_searches,
    )


def _result(usage: Mapping[str, object] | None, model: object, *, count_usage: bool) -> UsageResult:
    result = UsageResult(model=model if isinstance(model, str) and model else None)
    if usage is None:
        return result
    if count_usage:
        try:
            result.usage = usage_from_anthropic(usage)
        except InvalidUsage as exc:
            result.invalid_usage = str(exc)
    for key in _PRICING_HINTS:
        value = usage.get(key)
        if isinstance(value, str):
            result.extra[key] = value
    return result


def _parse_body(body: bytes, *, count_usage: bool) -> UsageResult:
    obj = json_object(body)
    if obj is None:
        return UsageResult()
    usage = obj.get("usage")
    result = _result(usage if isinstance(usage, Mapping) else None, obj.get("model"), count_usage=count_usage)
    _describe(result, obj.get("id"), obj.get("stop_reason"))
    if obj.get("type") == "error" or obj.get("error"):
        result.error = error_text(obj.get("error"))
    return result


def _describe(result: UsageResult, answer_id: object, stop_reason: object) -> None:
    if isinstance(answer_id, str):
        result.response_id = answer_id
    if isinstance(stop_reason, str):
        result.finish_reasons = [stop_reason]


def _data_type(block: bytes) -> bytes | None:
    """The JSON ``type`` of an event sent without an ``event:`` line (Anthropic always sends one;
    some re-streaming proxies drop it).  Anthropic serialises ``type`` first."""
    data = parse_event(block)[1]
    if data is None:
        return None
    head = data[:40].replace(b" ", b"")
    if not head.startswith(b'{"type":"'):
        return None
    end = head.find(b'"', 9)
    return head[9:end] if end > 0 else None


class _AnthropicStreamParser:
    """Decodes only ``message_start``, ``message_delta`` and ``error`` events, one or two per
    stream; text deltas, the bulk of it, are recognised by their first bytes and skipped."""

    __slots__ = ("_count_usage", "_delta_usage", "_error", "_framer", "_request_model", "_start", "_stop_reason",
                 "ended")

    def __init__(self, request: RequestInfo, count_usage: bool) -> None:
        self._framer = SSEFramer()
        self.ended = False
        self._start: bytes | None = None
        # What the message_delta events said, folded as they come so that their number is no
        # concern; applied over message_start's usage in finish.
        self._delta_usage: dict[str, object] | None = None
        self._error: bytes | None = None
        self._stop_reason: object = None
        self._request_model = request.model
        self._count_usage = count_usage

    def feed(self, chunk: bytes) -> None:
        for block in self._framer.feed(chunk):
            self._see(block)

    def _see(self, block: bytes) -> None:
        if block.startswith(b"event:"):
            if not block.startswith(_WANTED):
                # content_block_*, ping, message_stop: the bulk, dismissed by their first bytes
                if block.startswith(_STOP):
                    self.ended = True
                return
            name = event_name(block)
        else:
            name = _data_type(block)
        if name == _MESSAGE_DELTA:
            delta = json_object(parse_event(block)[1])
            usage = delta.get("usage") if delta is not None else None
            about = delta.get("delta") if delta is not None else None
            if isinstance(about, Mapping) and about.get("stop_reason") is not None:
                self._stop_reason = about.get("stop_reason")
            if isinstance(usage, Mapping):
                # Counts in message_delta are cumulative; a field it omits (or nulls) keeps the
                # value it had before.
                merged = self._delta_usage if self._delta_usage is not None else {}
                merged.update((k, v) for k, v in usage.items() if v is not None)
                self._delta_usage = merged
        elif name == _MESSAGE_START:
            self._start = block
        elif name == _ERROR:
            self._error = block
            self.ended = True
        elif name == _MESSAGE_STOP:
            self.ended = True

    def finish(self) -> UsageResult:
        rest = self._framer.close()
        if rest is not None:
            nothing_seen = self._start is None and self._delta_usage is None and self._error is None
            if nothing_seen and rest.lstrip()[:1] == b"{":
                # Not a stream after all (an upstream error answered as plain JSON).
                return _parse_body(rest, count_usage=self._count_usage)
            self._see(rest)

        model: object = None
        answer_id: object = None
        merged: dict[str, object] | None = None
        start = json_object(parse_event(self._start)[1]) if self._start is not None else None
        if start is not None:
            message = start.get("message")
            if isinstance(message, Mapping):
                model = message.get("model")
                answer_id = message.get("id")
                usage = message.get("usage")
                if isinstance(usage, Mapping):
                    merged = dict(usage)
        if self._delta_usage is not None:
            merged = {**merged, **self._delta_usage} if merged is not None else self._delta_usage

        result = _result(merged, model, count_usage=self._count_usage)
        _describe(result, answer_id, self._stop_reason)
        if result.model is None:
            result.model = self._request_model
        if self._error is not None:
            error = json_object(parse_event(self._error)[1])
            result.error = error_text(error.get("error") if error is not None else None)
        return result


# Anthropic's documented error types by status (docs: "Errors"); its SDK reads error.message.
_ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
                404: "not_found_error", 413: "request_too_large", 429: "rate_limit_error",
                503: "overloaded_error", 504: "timeout_error", 529: "overloaded_error"}


class AnthropicProvider:
    """The Anthropic Messages API."""

    kind: ClassVar[str] = "anthropic"
    default_base_url: ClassVar[str] = "https://api.anthropic.com"
    pricing_id: ClassVar[str] = "anthropic"

    __slots__ = ("name",)

    def __init__(self, name: str = "anthropic", *, api_root: bool = False) -> None:
        # Anthropic's SDKs take the origin as base URL and send /v1/messages: nothing to strip.
        self.name = name

    def __repr__(self) -> str:
        return f"AnthropicProvider(name={self.name!r})"

    def upstream_path(self, raw_path: bytes) -> bytes:
        return raw_path

    def bills(self, path: str) -> bool:
        return _reports_usage(path)

    def always_reports_usage(self, path: str) -> bool:
        return _reports_usage(path)

    def handles_path(self, path: str) -> bool:
        p = _bare_path(path)
        return p == "/v1/messages" or p.startswith("/v1/messages/")

    def credential(self, headers: Mapping[str, str], query: Mapping[str, str]) -> str | None:
        key = headers.get("x-api-key")
        if key:
            return key.strip() or None
        auth = headers.get("authorization")
        if not auth:
            return None
        scheme, _, token = auth.strip().partition(" ")
        return token.strip() or None if scheme.lower() == "bearer" else None

    def with_credential(self, headers: Sequence[tuple[str, str]], query: bytes,
                        secret: str) -> tuple[list[tuple[str, str]], bytes]:
        # The SDK sends x-api-key; OpenAI-style clients of the anthropic-openai route a bearer token.
        return swap_headers(headers, {"x-api-key": secret, "authorization": f"Bearer {secret}"}), query

    def error_body(self, status: int, code: str, message: str, extra: Mapping[str, object]) -> bytes:
        error: dict[str, object] = {"type": _ERROR_TYPES.get(status, "api_error"), "message": message,
                                    "code": code}
        error.update(extra)
        return orjson.dumps({"type": "error", "error": error})

    def request_info(self, path: str, body: bytes) -> RequestInfo:
        obj = json_object(body)
        if obj is None:
            return RequestInfo()
        model = obj.get("model")
        return RequestInfo(model=model if isinstance(model, str) else None, stream=obj.get("stream") is True)

    def parse_response(self, path: str, body: bytes) -> UsageResult:
        if looks_like_sse(body):
            # A buffered SSE body: read it the way a stream would have been read.
            parser = self.stream_parser(path, RequestInfo())
            parser.feed(body)
            return parser.finish()
        return _parse_body(body, count_usage=_reports_usage(path))

    def stream_parser(self, path: str, request: RequestInfo) -> StreamUsageParser:
        return _AnthropicStreamParser(request, count_usage=_reports_usage(path))
