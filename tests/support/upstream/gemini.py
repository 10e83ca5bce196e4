"""Gemini's native wire format: ``models/{model}:generateContent``, ``:streamGenerateContent``,
``:countTokens`` under ``/v1beta`` (and ``/v1``).

``:streamGenerateContent?alt=sse`` answers server-sent events (``data: <GenerateContentResponse>``,
CRLF line ends like Google's servers); without ``alt=sse`` it answers one JSON array, pretty-printed
and written element by element, the way the API streams it.  Every chunk carries
``usageMetadata`` with running totals (``candidatesTokenCount`` grows; the last chunk has the
final numbers), plus ``modelVersion`` and ``responseId``.  Zero counts are omitted, as proto3 JSON
does.  Thinking is a ``{"text": ..., "thought": true}`` part; tool calls are ``functionCall``
parts, never split across chunks.
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from .exchange import Exchange, Wire, cut_point, sse_event
from .scenarios import Conversation, MockUsage, ToolSpec, split_text

_STATUS: dict[int, tuple[str, str]] = {
    400: ("INVALID_ARGUMENT", "Request contains an invalid argument."),
    401: ("UNAUTHENTICATED", "API key not valid. Please pass a valid API key."),
    403: ("PERMISSION_DENIED", "The caller does not have permission."),
    404: ("NOT_FOUND", "Requested entity was not found."),
    409: ("ABORTED", "The operation was aborted."),
    429: ("RESOURCE_EXHAUSTED", "Resource has been exhausted (e.g. check quota)."),
    499: ("CANCELLED", "The operation was cancelled."),
    500: ("INTERNAL", "An internal error has occurred. Please retry or report in the troubleshooting guide."),
    503: ("UNAVAILABLE", "The model is overloaded. Please try again later."),
    504: ("DEADLINE_EXCEEDED", "Deadline expired before operation could complete."),
}


def error_object(status: int, message: str | None = None, error_type: str | None = None) -> dict[str, Any]:
    default_status, default_message = _STATUS.get(
        status, ("INTERNAL" if status >= 500 else "FAILED_PRECONDITION", f"Error {status}.")
    )
    return {"code": status, "message": message or default_message, "status": error_type or default_status}


def error_body(status: int, message: str | None = None, error_type: str | None = None) -> dict[str, Any]:
    return {"error": error_object(status, message, error_type)}


WIRE = Wire(name="gemini", error_body=error_body, headers=lambda seq: {"x-mock-request-id": f"{seq}"})

SSE_NEWLINE = "\r\n"


# --------------------------------------------------------------------------------------------------
# Usage


def usage_metadata(usage: MockUsage, candidates: int | None = None) -> dict[str, Any]:
    """``usageMetadata``; ``candidates`` overrides the candidate count (running totals in streams)."""
    prompt = usage.prompt_tokens_without_tool_use
    visible = usage.visible_output_tokens if candidates is None else candidates
    data: dict[str, Any] = {
        "promptTokenCount": prompt,
        "candidatesTokenCount": visible,
        "totalTokenCount": prompt + visible + usage.reasoning_tokens + usage.tool_use_prompt_tokens,
        "cachedContentTokenCount": usage.cached_tokens,
        "promptTokensDetails": [{"modality": "TEXT", "tokenCount": prompt}] if prompt else [],
        "cacheTokensDetails": [{"modality": "TEXT", "tokenCount": usage.cached_tokens}]
        if usage.cached_tokens
        else [],
        "toolUsePromptTokenCount": usage.tool_use_prompt_tokens,
        "toolUsePromptTokensDetails": [{"modality": "TEXT", "tokenCount": usage.tool_use_prompt_tokens}]
        if usage.tool_use_prompt_tokens
        else [],
        "thoughtsTokenCount": usage.reasoning_tokens,
    }
    return {key: value for key, value in data.items() if value not in (0, [])}


# --------------------------------------------------------------------------------------------------
# Reading requests


def _get(mapping: Any, camel: str, snake: str) -> Any:
    if not isinstance(mapping, dict):
        return None
    return mapping.get(camel, mapping.get(snake))


def _parts(content: Any) -> list[dict[str, Any]]:
    parts = content.get("parts") if isinstance(content, dict) else None
    return [p for p in parts or [] if isinstance(p, dict)]


def _text_of(content: Any) -> str:
    return "\n".join(
        p["text"] for p in _parts(content) if isinstance(p.get("text"), str) and not p.get("thought")
    )


def conversation(body: dict[str, Any]) -> Conversation:
    contents = [c for c in body.get("contents") or [] if isinstance(c, dict)]
    conv = Conversation(system_text=_text_of(_get(body, "systemInstruction", "system_instruction")))
    for content in reversed(contents):
        if content.get("role", "user") == "user" and (text := _text_of(content)):
            conv.user_text = text
            break
    for tool in body.get("tools") or []:
        for decl in _get(tool, "functionDeclarations", "function_declarations") or []:
            if isinstance(decl, dict) and decl.get("name"):
                schema = decl.get("parametersJsonSchema") or decl.get("parameters_json_schema")
                conv.tools.append(ToolSpec(decl["name"], schema or decl.get("parameters") or {}))
    if contents:
        results = [
            (_get(p, "functionResponse", "function_response") or {}).get("name", "")
            for p in _parts(contents[-1])
            if _get(p, "functionResponse", "function_response") is not None
        ]
        conv.tool_results = results or None
    calling = _get(
        _get(body, "toolConfig", "tool_config"), "functionCallingConfig", "function_calling_config"
    )
    mode = str((calling or {}).get("mode", "AUTO")).upper()
    allowed = _get(calling, "allowedFunctionNames", "allowed_function_names") or []
    if mode == "NONE":
        conv.tool_choice = "none"
    elif mode == "ANY":
        conv.tool_choice = "required"
        if len(allowed) == 1:
            conv.forced_tool = allowed[0]
    thinking = _get(_get(body, "generationConfig", "generation_config"), "thinkingConfig", "thinking_config")
    conv.thinking_requested = bool(_get(thinking, "includeThoughts", "include_thoughts"))
    return conv


# --------------------------------------------------------------------------------------------------
# POST /v1beta/models/{model}:{method}


def _split_target(target: str) -> tuple[str, str]:
    model, _, method = target.rpartition(":")
    return model.removeprefix("models/"), method


async def model_action(request: web.Request) -> web.StreamResponse:
    model, method = _split_target(request.match_info["target"])
    if method == "generateContent":
        return await _generate(request, model, stream=False)
    if method == "streamGenerateContent":
        return await _generate(request, model, stream=True)
    if method == "countTokens":
        return await _count_tokens(request)
    ex = Exchange(request, WIRE)
    return ex.error_response(404, f"Method {method!r} is not mocked.")


async def _generate(request: web.Request, model: str, *, stream: bool) -> web.StreamResponse:
    ex = Exchange(request, WIRE)
    if (early := ex.parse_json()) is not None:
        return early
    if (early := await ex.resolve(conversation(ex.body))) is not None:
        return early
    reply = ex.reply
    usage = ex.usage
    common = {"modelVersion": ex.model(model, "gemini-2.5-flash"), "responseId": ex.ident("resp-")}

    def response(
        parts: list[dict[str, Any]], *, finish: bool, candidates: int | None = None
    ) -> dict[str, Any]:
        candidate: dict[str, Any] = {"content": {"parts": parts, "role": "model"}}
        if finish:
            candidate["finishReason"] = "STOP"
        candidate["index"] = 0
        data: dict[str, Any] = {"candidates": [candidate]}
        metadata = ex.usage_payload(lambda u: usage_metadata(u, candidates))
        if metadata is not None:
            data["usageMetadata"] = metadata
        return {**data, **common}

    thought_part = {"text": reply.thinking, "thought": True} if reply.thinking else None
    call_part = (
        {"functionCall": {"name": reply.tool_call.name, "args": reply.tool_call.arguments}}
        if reply.tool_call
        else None
    )

    if not stream:
        parts = [p for p in (thought_part, call_part) if p is not None]
        if call_part is None:
            parts.append({"text": reply.text or ""})
        return await ex.send_json(response(parts, finish=True))

    chunks: list[dict[str, Any]] = []
    if thought_part is not None:
        chunks.append(response([thought_part], finish=False, candidates=0))
    content_start = len(chunks)
    pieces: list[str] = []
    if call_part is not None:
        chunks.append(response([call_part], finish=True))
        content_events = 1
    else:
        pieces = split_text(reply.text or "", ex.scenario.chunks) or [""]
        total = usage.visible_output_tokens
        for i, piece in enumerate(pieces):
            last = i == len(pieces) - 1
            running = total if last else total * (i + 1) // len(pieces)
            chunks.append(response([{"text": piece}], finish=last, candidates=running))
        content_events = len(pieces)
    cut = cut_point(content_start, content_events)
    error = {"error": error_object(500, ex.scenario.error_message, ex.scenario.error_type)}

    if request.query.get("alt") == "sse":
        events = [sse_event(chunk, newline=SSE_NEWLINE) for chunk in chunks]
        tail = [sse_event(error, newline=SSE_NEWLINE)]
        return await ex.send_stream(
            events, cut_default=cut, error_tail=tail, content_type="text/event-stream"
        )

    # A JSON array, written element by element: "[{...}", ",\r\n{...}", ..., "\n]"
    rendered = [json.dumps(chunk, indent=2) for chunk in chunks]
    events = [("[" if i == 0 else ",\r\n").encode() + text.encode() for i, text in enumerate(rendered)]
    events.append(b"\n]")
    tail = [b",\r\n" + json.dumps(error, indent=2).encode() + b"\n]"]
    return await ex.send_stream(
        events, cut_default=max(1, cut), error_tail=tail, content_type="application/json; charset=UTF-8"
    )


async def _count_tokens(request: web.Request) -> web.StreamResponse:
    ex = Exchange(request, WIRE)
    if (early := ex.parse_json()) is not None:
        return early
    body = ex.body
    inner = _get(body, "generateContentRequest", "generate_content_request")
    if (early := await ex.resolve(conversation(inner if isinstance(inner, dict) else body))) is not None:
        return early
    total = ex.usage.input_tokens
    payload: dict[str, Any] = {
        "totalTokens": total,
        "promptTokensDetails": [{"modality": "TEXT", "tokenCount": total}],
    }
    if ex.usage.cached_tokens:
        payload["cachedContentTokenCount"] = ex.usage.cached_tokens
    return await ex.send_json(payload)


# --------------------------------------------------------------------------------------------------
# GET /v1beta/models

MODELS = ["gemini-2.5-flash", "gemini-2.5-pro", "gemini-2.0-flash"]


async def list_models(request: web.Request) -> web.StreamResponse:
    ex = Exchange(request, WIRE)
    if (early := await ex.resolve(Conversation())) is not None:
        return early
    models = [
        {
            "name": f"models/{name}",
            "displayName": name,
            "supportedGenerationMethods": ["generateContent", "streamGenerateContent", "countTokens"],
        }
        for name in MODELS
    ]
    return await ex.send_json({"models": models})


ROUTES: list[tuple[str, str, Any]] = [
    ("POST", "/v1beta/models/{target}", model_action),
    ("POST", "/v1/models/{target}", model_action),
    ("GET", "/v1beta/models", list_models),
]
