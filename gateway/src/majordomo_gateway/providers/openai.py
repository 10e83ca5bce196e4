"""OpenAI's wire format: Chat Completions, legacy Completions, Embeddings and the Responses API.

The same class serves every OpenAI-compatible upstream (Gemini's ``/v1beta/openai/`` endpoint is
registered as ``OpenAIProvider(name="gemini")``), so nothing here assumes the upstream is OpenAI:
surfaces are recognised by the end of the path and usage by the shape of the ``usage`` object.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import ClassVar

import orjson

from majordomo_gateway.providers.base import RequestInfo, StreamUsageParser, UsageResult, swap_headers
from majordomo_gateway.providers.sse import (
    Counts,
    SSEFramer,
    error_text,
    has_object_value,
    json_object,
    looks_like_sse,
    parse_event,
)
from majordomo_gateway.usage import InvalidUsage, Usage

__all__ = ["OpenAIProvider", "usage_from_openai"]

_HANDLED = frozenset({"/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/responses"})

# Events of the Responses API whose `response` object is final and carries the usage.
_RESPONSE_FINAL_TYPES = frozenset({"response.completed", "response.failed", "response.incomplete"})


def _bare_path(path: str) -> str:
    return path.partition("?")[0].rstrip("/")


# Endpoints whose answer reports tokens that this very request was billed for, and whether a
# successful answer always carries them (one that does not is recorded as usage "missing"; audio
# speech answers with audio bytes and image generation reports usage only for some models).
_BILLED: dict[str, bool] = {
    "/chat/completions": True,
    "/completions": True,
    "/embeddings": True,
    "/responses": True,
    "/responses/compact": False,
    "/audio/transcriptions": False,
    "/audio/translations": False,
    "/audio/speech": False,
    "/images/generations": False,
    "/images/edits": False,
    "/moderations": False,
}
_BILLED_SUFFIXES = tuple(_BILLED)
_USAGE_ALWAYS_SUFFIXES = tuple(suffix for suffix, always in _BILLED.items() if always)


def _reports_new_usage(path: str) -> bool:
    """True only for the endpoints that bill the request they answer.

    Everything else under /v1/ is not metered: retrieving an already-billed object would record its
    tokens a second time (``GET /v1/responses/{id}`` and its streamed replay, ``/cancel``,
    ``/input_items``, ``/input_tokens``, stored chat completions under ``/v1/chat/completions/{id}``,
    batch objects), and models, files and the rest report no usage at all.
    """
    return _bare_path(path).endswith(_BILLED_SUFFIXES)


def usage_from_openai(usage: Mapping[str, object]) -> Usage:
    """Our Usage from an OpenAI ``usage`` object, in either of its two shapes.

    Chat/Completions/Embeddings say ``prompt_tokens``/``completion_tokens``; the Responses API
    (and the audio endpoints) say ``input_tokens``/``output_tokens``.  Cached tokens are already
    part of the prompt count and reasoning tokens part of the completion count.  Raises
    InvalidUsage when a count is not a count (sse.as_count).
    """
    count = Counts()
    if "input_tokens" in usage or "output_tokens" in usage:
        in_key, out_key = "input_tokens", "output_tokens"
    else:
        in_key, out_key = "prompt_tokens", "completion_tokens"
    input_tokens = count.get(usage, in_key)
    output_tokens = count.get(usage, out_key)
    in_details = usage.get(in_key + "_details")
    out_details = usage.get(out_key + "_details")
    cached = writes = reasoning = 0
    if isinstance(in_details, Mapping):
        cached = count.get(in_details, "cached_tokens", in_key + "_details.")
        writes = count.get(in_details, "cache_write_tokens", in_key + "_details.")
    if isinstance(out_details, Mapping):
        reasoning = count.get(out_details, "reasoning_tokens", out_key + "_details.")
    if reasoning:
        # Some OpenAI-compatible servers leave reasoning out of completion_tokens; their
        # total_tokens gives them away.  OpenAI itself always has total == prompt + completion.
        total = count.get(usage, "total_tokens")
        if total == input_tokens + output_tokens + reasoning and total != input_tokens + output_tokens:
            output_tokens += reasoning
    count.check()
    return Usage(
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        cached_tokens=cached,
        cache_creation_tokens=writes,
        reasoning_tokens=reasoning,
    )


def _model_name(value: object) -> str | None:
    if not isinstance(value, str) or not value:
        return None
    # Gemini's compatibility layer may answer with its native resource name.
    return value.removeprefix("models/")


def _result_from_object(obj: Mapping[str, object], *, count_usage: bool) -> UsageResult:
    """UsageResult from a decoded response body, chat chunk, or Responses API event."""
    result = UsageResult()
    target: Mapping[str, object] = obj
    response = obj.get("response")
    if isinstance(response, Mapping) and (obj.get("type") in _RESPONSE_FINAL_TYPES or "usage" not in obj):
        # A Responses API streaming event wraps the response object.
        target = response
    result.model = _model_name(target.get("model"))
    _describe(result, target)
    tier = target.get("service_tier")
    if isinstance(tier, str):
        # Flex and priority processing are priced differently from the default tier.
        result.extra["service_tier"] = tier
    usage = target.get("usage")
    if count_usage and isinstance(usage, Mapping):
        try:
            result.usage = usage_from_openai(usage)
        except InvalidUsage as exc:
            result.invalid_usage = str(exc)
    error = _error_of(obj) or target.get("error")
    if error:
        result.error = error_text(error)
    return result


def _describe(result: UsageResult, target: Mapping[str, object]) -> None:
    """The answer's id and why it ended: Chat's choices' finish_reason, the Responses API's status."""
    answer_id = target.get("id")
    if isinstance(answer_id, str):
        result.response_id = answer_id
    choices = target.get("choices")
    if isinstance(choices, list):
        result.finish_reasons = [c["finish_reason"] for c in choices
                                 if isinstance(c, Mapping) and isinstance(c.get("finish_reason"), str)]
    elif target.get("object") == "response":
        details = target.get("incomplete_details")
        reason = details.get("reason") if isinstance(details, Mapping) else None
        status = target.get("status")
        if isinstance(reason, str) or isinstance(status, str):
            result.finish_reasons = [reason if isinstance(reason, str) else str(status)]


def _error_of(obj: Mapping[str, object]) -> object:
    error = obj.get("error")
    if not error and obj.get("type") == "error":
        # The Responses API's `error` event has code and message at the top level.
        return {"code": obj.get("code"), "message": obj.get("message")}
    return error


class _OpenAIStreamParser:
    """Keeps the raw bytes of the last event carrying a usage object and decodes only that one.

    With ``stream_options.include_usage`` every Chat chunk has ``"usage":null`` and the last one
    a usage object; in the Responses API the usage rides in ``response.completed`` (or
    ``.failed``/``.incomplete``).  Either way it is the last such event that counts.
    """

    __slots__ = ("_count_usage", "_error_block", "_finish_block", "_first", "_framer", "_request_model",
                 "_usage_block", "ended")

    def __init__(self, request: RequestInfo, count_usage: bool) -> None:
        self._framer = SSEFramer()
        self.ended = False
        # The chunk saying why the answer ended (Chat streams put it before the usage-only chunk).
        self._finish_block: bytes | None = None
        self._usage_block: bytes | None = None
        self._error_block: bytes | None = None
        # The first event names the model even when the stream never reports usage.
        self._first: bytes | None = None
        self._request_model = request.model
        self._count_usage = count_usage

    def feed(self, chunk: bytes) -> None:
        for block in self._framer.feed(chunk):
            self._see(block)

    def _see(self, block: bytes) -> None:
        if self._first is None and b'"model"' in block:
            self._first = block
        if _FINISH in block or _FINISH_SPACED in block:
            self._finish_block = block
        if has_object_value(block, b'"usage"'):
            self._usage_block = block
            if block.startswith(_FINAL_STARTS):
                self.ended = True
        elif block.startswith(_END_STARTS):
            # One prefix test for every event: errors and the end share it.
            if _is_error_event(block):
                self._error_block = block
            self.ended = True

    def finish(self) -> UsageResult:
        rest = self._framer.close()
        if rest is not None:
            if self._first is None and self._usage_block is None and rest.lstrip()[:1] == b"{":
                # Not a stream after all (an upstream error answered as plain JSON).
                return _parse_body(rest, count_usage=self._count_usage)
            self._see(rest)
        result = UsageResult()
        source = self._usage_block or self._first
        if source is not None:
            obj = json_object(parse_event(source)[1])
            if obj is not None:
                result = _result_from_object(obj, count_usage=self._count_usage)
        if self._error_block is not None and self._error_block is not source:
            obj = json_object(parse_event(self._error_block)[1])
            if obj is not None:
                result.error = _result_from_object(obj, count_usage=False).error
        if not result.finish_reasons and self._finish_block is not None and self._finish_block is not source:
            obj = json_object(parse_event(self._finish_block)[1])
            if obj is not None:
                finished = UsageResult()
                _describe(finished, obj)
                result.finish_reasons = finished.finish_reasons
                result.response_id = result.response_id or finished.response_id
        if result.model is None:
            result.model = self._request_model
        return result


_FINISH = b'"finish_reason":"'
_FINISH_SPACED = b'"finish_reason": "'

# How an error event starts: Chat's `data: {"error":...}`, the Responses API's `error` event
# (named, or not when a relay drops `event:` lines), and `response.failed`, whose usage may be
# null.  Matching the head only keeps text deltas that mention "error" from costing a full scan.
_ERROR_DATA_STARTS = (
    b'{"error"',
    b'{ "error"',
    b'{"type":"error"',
    b'{"type": "error"',
    b'{"type":"response.failed"',
    b'{"type": "response.failed"',
)
_ERROR_STARTS = (
    *(b"data: " + data for data in _ERROR_DATA_STARTS),
    *(b"data:" + data for data in _ERROR_DATA_STARTS),
    b"event: error\n",
    b"event:error\n",
    b"event: response.failed\n",
    b"event:response.failed\n",
)


def _is_error_event(block: bytes) -> bool:
    return block.startswith(_ERROR_STARTS)


# The Responses API's last event (it sends no [DONE]), named or data-only; it carries the usage.
_FINAL_STARTS = tuple(
    start
    for kind in _RESPONSE_FINAL_TYPES
    for start in (b"event: " + kind.encode() + b"\n", b"event:" + kind.encode() + b"\n",
                  b'data: {"type":"' + kind.encode() + b'"', b'data:{"type":"' + kind.encode() + b'"',
                  b'data: {"type": "' + kind.encode() + b'"')
)
# What ends a stream without usage: Chat's `data: [DONE]`, an error, a final event whose usage is null.
_END_STARTS = (b"data: [DONE]", b"data:[DONE]", *_ERROR_STARTS, *_FINAL_STARTS)


def _parse_body(body: bytes, *, count_usage: bool) -> UsageResult:
    obj = json_object(body)
    if obj is None:
        return UsageResult()
    return _result_from_object(obj, count_usage=count_usage)


class OpenAIProvider:
    """OpenAI, or any upstream speaking OpenAI's API under another ``name``."""

    kind: ClassVar[str] = "openai"
    default_base_url: ClassVar[str] = "https://api.openai.com"
    pricing_id: ClassVar[str] = "openai"

    __slots__ = ("api_root", "name")

    def __init__(self, name: str = "openai", *, api_root: bool = False) -> None:
        self.name = name
        # OpenAI's own base URL is its origin and clients send /v1/...; OpenAI-compatible servers
        # (and Gemini's compatibility layer) are configured by their API root, which replaces /v1.
        self.api_root = api_root

    def __repr__(self) -> str:
        return f"OpenAIProvider(name={self.name!r}, api_root={self.api_root!r})"

    def upstream_path(self, raw_path: bytes) -> bytes:
        if self.api_root and (raw_path == b"/v1" or raw_path.startswith(b"/v1/")):
            return raw_path[3:] or b"/"
        return raw_path

    def bills(self, path: str) -> bool:
        return _reports_new_usage(path)

    def always_reports_usage(self, path: str) -> bool:
        return _bare_path(path).endswith(_USAGE_ALWAYS_SUFFIXES)

    def handles_path(self, path: str) -> bool:
        p = _bare_path(path)
        return p in _HANDLED or p.startswith("/v1/responses/")

    def credential(self, headers: Mapping[str, str], query: Mapping[str, str]) -> str | None:
        return _bearer(headers.get("authorization"))

    def with_credential(self, headers: Sequence[tuple[str, str]], query: bytes,
                        secret: str) -> tuple[list[tuple[str, str]], bytes]:
        return swap_headers(headers, {"authorization": f"Bearer {secret}"}), query

    def error_body(self, status: int, code: str, message: str, extra: Mapping[str, object]) -> bytes:
        return _error_body(status, code, message, extra)

    def request_info(self, path: str, body: bytes) -> RequestInfo:
        obj = json_object(body)
        if obj is None:
            return RequestInfo()
        model = obj.get("model")
        stream = obj.get("stream") is True
        include_usage: bool | None = None
        if stream and "stream_options" in obj:
            options = obj["stream_options"]
            include_usage = isinstance(options, Mapping) and options.get("include_usage") is True
        return RequestInfo(model=model if isinstance(model, str) else None, stream=stream,
                           include_usage=include_usage)

    def parse_response(self, path: str, body: bytes) -> UsageResult:
        if looks_like_sse(body):
            # A buffered SSE body: read it the way a stream would have been read.
            parser = self.stream_parser(path, RequestInfo())
            parser.feed(body)
            return parser.finish()
        return _parse_body(body, count_usage=_reports_new_usage(path))

    def stream_parser(self, path: str, request: RequestInfo) -> StreamUsageParser:
        return _OpenAIStreamParser(request, count_usage=_reports_new_usage(path))


# OpenAI's error types by status (its SDK picks the exception class by status, shows the message).
_ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
                404: "not_found_error", 413: "invalid_request_error", 429: "rate_limit_exceeded"}


# Codes that are their own type (the issue's `{"error": {"type": "budget_exceeded", ...}}`).
_CODE_TYPES = {"budget_exceeded": "budget_exceeded"}


def _error_body(status: int, code: str, message: str, extra: Mapping[str, object]) -> bytes:
    error_type = _CODE_TYPES.get(code) or _ERROR_TYPES.get(status, "server_error")
    error: dict[str, object] = {"message": message, "type": error_type,
                                "param": None, "code": code}
    error.update(extra)
    return orjson.dumps({"error": error})


def _bearer(value: str | None) -> str | None:
    if not value:
        return None
    scheme, _, token = value.strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    token = token.strip()
    return token or None
