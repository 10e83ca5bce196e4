"""Anthropic's wire format: POST /v1/messages (JSON and SSE) and POST /v1/messages/count_tokens.

Streams follow the documented event flow: ``message_start`` (usage with the input side and a
provisional ``output_tokens``), then per content block ``content_block_start`` /
``content_block_delta``... / ``content_block_stop`` (a ``ping`` after the first start), then
``message_delta`` with ``stop_reason`` and the cumulative usage, then ``message_stop``.
Block types: ``thinking`` (thinking_delta + signature_delta), ``text`` (text_delta) and
``tool_use`` (input_json_delta, starting with an empty ``partial_json``).
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from .exchange import Exchange, Wire, cut_point, sse_event
from .scenarios import Conversation, MockUsage, ToolSpec, split_text

_ERROR_TYPES: dict[int, tuple[str, str]] = {
    400: ("invalid_request_error", "Invalid request."),
    401: ("authentication_error", "invalid x-api-key"),
    403: ("permission_error", "Your API key does not have permission to use the specified resource."),
    404: ("not_found_error", "The requested resource could not be found."),
    413: ("request_too_large", "Request exceeds the maximum allowed number of bytes."),
    429: ("rate_limit_error", "Number of request tokens has exceeded your per-minute rate limit."),
    500: ("api_error", "Internal server error"),
    504: ("timeout_error", "Request timeout"),
    529: ("overloaded_error", "Overloaded"),
}


def error_object(status: int, message: str | None = None, error_type: str | None = None) -> dict[str, Any]:
    default_type, default_message = _ERROR_TYPES.get(
        status, ("api_error" if status >= 500 else "invalid_request_error", f"Error {status}")
    )
    return {"type": error_type or default_type, "message": message or default_message}


def error_body(status: int, message: str | None = None, error_type: str | None = None) -> dict[str, Any]:
    return {"type": "error", "error": error_object(status, message, error_type)}


WIRE = Wire(name="anthropic", error_body=error_body, headers=lambda seq: {"request-id": f"req_mock{seq:06d}"})


# --------------------------------------------------------------------------------------------------
# Usage


def message_usage(usage: MockUsage) -> dict[str, Any]:
    """The ``usage`` of a Message (and of ``message_start``, with a provisional output count)."""
    data: dict[str, Any] = {
        "input_tokens": usage.uncached_input_tokens,
        "cache_creation_input_tokens": usage.cache_creation_tokens,
        "cache_read_input_tokens": usage.cached_tokens,
        "cache_creation": {
            "ephemeral_5m_input_tokens": usage.cache_creation_5m_tokens,
            "ephemeral_1h_input_tokens": usage.cache_creation_1h_tokens,
        },
        "output_tokens": usage.output_tokens,
        "service_tier": "standard",
    }
    if usage.web_search_requests:
        data["server_tool_use"] = {"web_search_requests": usage.web_search_requests}
    return data


def delta_usage(usage: MockUsage) -> dict[str, Any]:
    """The cumulative ``usage`` of ``message_delta``."""
    data: dict[str, Any] = {
        "input_tokens": usage.uncached_input_tokens,
        "cache_creation_input_tokens": usage.cache_creation_tokens,
        "cache_read_input_tokens": usage.cached_tokens,
        "output_tokens": usage.output_tokens,
    }
    if usage.web_search_requests:
        data["server_tool_use"] = {"web_search_requests": usage.web_search_requests}
    return data


# --------------------------------------------------------------------------------------------------
# Reading requests


def _blocks(content: Any) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    if isinstance(content, list):
        return [block for block in content if isinstance(block, dict)]
    return []


def _text_of(content: Any) -> str:
    return "\n".join(
        b["text"] for b in _blocks(content) if b.get("type") == "text" and isinstance(b.get("text"), str)
    )


def conversation(body: dict[str, Any]) -> Conversation:  # noqa: C901
    messages = [m for m in body.get("messages") or [] if isinstance(m, dict)]
    conv = Conversation(system_text=_text_of(body.get("system")))
    for message in reversed(messages):
        if message.get("role") == "user" and (text := _text_of(message.get("content"))):
            conv.user_text = text
            break
    for tool in body.get("tools") or []:
        # Client tools have an input_schema; server tools (web_search_..., bash_...) do not.
        if isinstance(tool, dict) and tool.get("name") and "input_schema" in tool:
            conv.tools.append(ToolSpec(tool["name"], tool.get("input_schema") or {}))
    names: dict[str, str] = {}
    for message in messages:
        for block in _blocks(message.get("content")):
            if block.get("type") == "tool_use":
                names[block.get("id", "")] = block.get("name", "")
    if messages and messages[-1].get("role") == "user":
        results = [
            names.get(block.get("tool_use_id", ""), "")
            for block in _blocks(messages[-1].get("content"))
            if block.get("type") == "tool_result"
        ]
        conv.tool_results = results or None
    choice = body.get("tool_choice")
    if isinstance(choice, dict):
        kind = choice.get("type")
        if kind == "none":
            conv.tool_choice = "none"
        elif kind == "any":
            conv.tool_choice = "required"
        elif kind == "tool":
            conv.tool_choice, conv.forced_tool = "required", choice.get("name")
    thinking = body.get("thinking")
    conv.thinking_requested = isinstance(thinking, dict) and thinking.get("type") in ("enabled", "adaptive")
    return conv


# --------------------------------------------------------------------------------------------------
# POST /v1/messages


async def messages(request: web.Request) -> web.StreamResponse:  # noqa: C901
    ex = Exchange(request, WIRE)
    if (early := ex.parse_json()) is not None:
        return early
    if (early := await ex.resolve(conversation(ex.body))) is not None:
        return early
    body = ex.body
    reply = ex.reply
    model = ex.model(body.get("model"), "claude-sonnet-4-6")
    message_id = ex.ident("msg_")
    signature = "bW9jay1zaWduYXR1cmU=" + ex.ident("")  # opaque, like the real one
    stop_reason: Any = "tool_use" if reply.tool_call else "end_turn"
    if ex.scenario.stop_reason is not None:
        stop_reason = json.loads(ex.scenario.stop_reason)

    content: list[dict[str, Any]] = []
    if reply.thinking:
        content.append({"type": "thinking", "thinking": reply.thinking, "signature": signature})
    if reply.tool_call:
        content.append(
            {
                "type": "tool_use",
                "id": ex.ident("toolu_"),
                "name": reply.tool_call.name,
                "input": reply.tool_call.arguments,
            }
        )
    else:
        content.append({"type": "text", "text": reply.text or ""})

    message: dict[str, Any] = {
        "id": message_id,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": None,
    }
    usage = ex.usage_payload(message_usage)
    if usage is not None:
        message["usage"] = usage

    if not body.get("stream"):
        return await ex.send_json(message)

    events: list[bytes] = []

    def emit(event_type: str, **fields: Any) -> None:
        events.append(sse_event({"type": event_type, **fields}, event_type))

    start = {**message, "content": [], "stop_reason": None, "stop_sequence": None}
    if usage is not None and ex.scenario.raw_usage is None:
        start["usage"] = {**usage, "output_tokens": min(1, ex.usage.output_tokens)}
    emit("message_start", message=start)
    content_start = 0
    pieces: list[str] = []
    for index, block in enumerate(content):
        kind = block["type"]
        if kind == "thinking":
            emit(
                "content_block_start",
                index=index,
                content_block={"type": "thinking", "thinking": "", "signature": ""},
            )
        elif kind == "text":
            emit("content_block_start", index=index, content_block={"type": "text", "text": ""})
        else:
            emit("content_block_start", index=index, content_block={**block, "input": {}})
        if index == 0:
            emit("ping")
        if kind == "thinking":
            for piece in split_text(block["thinking"], 2):
                emit("content_block_delta", index=index, delta={"type": "thinking_delta", "thinking": piece})
            emit(
                "content_block_delta", index=index, delta={"type": "signature_delta", "signature": signature}
            )
        elif kind == "text":
            content_start = len(events)
            pieces = split_text(block["text"], ex.scenario.chunks)
            for piece in pieces:
                emit("content_block_delta", index=index, delta={"type": "text_delta", "text": piece})
        else:
            assert reply.tool_call is not None
            emit("content_block_delta", index=index, delta={"type": "input_json_delta", "partial_json": ""})
            content_start = len(events)
            pieces = split_text(reply.tool_call.arguments_json, ex.scenario.chunks)
            for piece in pieces:
                emit(
                    "content_block_delta",
                    index=index,
                    delta={"type": "input_json_delta", "partial_json": piece},
                )
        emit("content_block_stop", index=index)
    final: dict[str, Any] = {"delta": {"stop_reason": stop_reason, "stop_sequence": None}}
    final_usage = ex.usage_payload(delta_usage)
    if final_usage is not None:
        final["usage"] = final_usage
    emit("message_delta", **final)
    emit("message_stop")

    error = {"type": "error", "error": error_object(529, ex.scenario.error_message, ex.scenario.error_type)}
    return await ex.send_stream(
        events, cut_default=cut_point(content_start, len(pieces)), error_tail=[sse_event(error, "error")]
    )


# --------------------------------------------------------------------------------------------------
# POST /v1/messages/count_tokens


async def count_tokens(request: web.Request) -> web.StreamResponse:
    ex = Exchange(request, WIRE)
    if (early := ex.parse_json()) is not None:
        return early
    if (early := await ex.resolve(conversation(ex.body))) is not None:
        return early
    return await ex.send_json({"input_tokens": ex.usage.input_tokens})


# --------------------------------------------------------------------------------------------------
# GET /v1/models is OpenAI's route on this server; Anthropic's list has the same path and differs only
# in shape, so it is not mocked.

ROUTES: list[tuple[str, str, Any]] = [
    ("POST", "/v1/messages", messages),
    ("POST", "/v1/messages/count_tokens", count_tokens),
]
