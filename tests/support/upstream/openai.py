"""OpenAI's wire format: chat completions, responses, embeddings, legacy completions, models.

The chat completions handler is also mounted under ``/v1beta/openai`` (Gemini's OpenAI-compatible
API), together with embeddings and models.

Streams follow OpenAI's documented behaviour:

- chat/completions: ``data: <chunk>`` events, the first carrying the role, then one per content
  piece, then a chunk with ``finish_reason``; a usage-only chunk (``choices: []``) comes last only
  when ``stream_options.include_usage`` is true (every earlier chunk then carries ``"usage": null``);
  ``data: [DONE]`` ends the stream.
- responses: typed ``event:``/``data:`` pairs with a ``sequence_number``, from ``response.created``
  to ``response.completed`` (which carries usage); no ``[DONE]``.
"""

from __future__ import annotations

import base64
import struct
from typing import Any

from aiohttp import web

from .exchange import Exchange, Wire, cut_point, sse_event
from .scenarios import Conversation, MockUsage, ToolSpec, split_text

_ERRORS: dict[int, tuple[str, str | None, str]] = {
    400: ("invalid_request_error", None, "Invalid request."),
    401: ("invalid_request_error", "invalid_api_key", "Incorrect API key provided."),
    403: (
        "permission_error",
        "unsupported_country_region_territory",
        "Country, region, or territory not supported.",
    ),
    404: (
        "invalid_request_error",
        "model_not_found",
        "The model does not exist or you do not have access to it.",
    ),
    409: ("invalid_request_error", None, "Conflict."),
    422: ("invalid_request_error", None, "Unprocessable entity."),
    429: ("requests", "rate_limit_exceeded", "Rate limit reached for requests."),
    500: ("server_error", None, "The server had an error while processing your request. Sorry about that!"),
    502: ("server_error", None, "Bad gateway."),
    503: ("server_error", None, "The engine is currently overloaded, please try again later."),
    504: ("server_error", None, "Gateway timeout."),
}


def error_object(status: int, message: str | None = None, error_type: str | None = None) -> dict[str, Any]:
    default_type, code, default_message = _ERRORS.get(
        status, ("server_error" if status >= 500 else "invalid_request_error", None, f"Error {status}.")
    )
    return {
        "message": message or default_message,
        "type": error_type or default_type,
        "param": None,
        "code": code,
    }


def error_body(status: int, message: str | None = None, error_type: str | None = None) -> dict[str, Any]:
    return {"error": error_object(status, message, error_type)}


WIRE = Wire(
    name="openai",
    error_body=error_body,
    headers=lambda seq: {"x-request-id": f"req_mock{seq:06d}", "openai-processing-ms": "1"},
)

# --------------------------------------------------------------------------------------------------
# Usage


def chat_usage(usage: MockUsage) -> dict[str, Any]:
    return {
        "prompt_tokens": usage.input_tokens,
        "completion_tokens": usage.output_tokens,
        "total_tokens": usage.input_tokens + usage.output_tokens,
        "prompt_tokens_details": {"cached_tokens": usage.cached_tokens, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": usage.reasoning_tokens,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


def responses_usage(usage: MockUsage) -> dict[str, Any]:
    return {
        "input_tokens": usage.input_tokens,
        "input_tokens_details": {"cached_tokens": usage.cached_tokens},
        "output_tokens": usage.output_tokens,
        "output_tokens_details": {"reasoning_tokens": usage.reasoning_tokens},
        "total_tokens": usage.input_tokens + usage.output_tokens,
    }


def completions_usage(usage: MockUsage) -> dict[str, Any]:
    return {
        "prompt_tokens": usage.input_tokens,
        "completion_tokens": usage.output_tokens,
        "total_tokens": usage.input_tokens + usage.output_tokens,
    }


def embeddings_usage(usage: MockUsage) -> dict[str, Any]:
    return {"prompt_tokens": usage.input_tokens, "total_tokens": usage.input_tokens}


# --------------------------------------------------------------------------------------------------
# Reading requests


def _text_of(content: Any) -> str:
    """Text of a message ``content``: a string or a list of parts (text / input_text / output_text)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = [
            part.get("text", "")
            for part in content
            if isinstance(part, dict)
            and part.get("type") in ("text", "input_text", "output_text")
            and isinstance(part.get("text"), str)
        ]
        return "\n".join(texts)
    return ""


def _tool_choice(value: Any) -> tuple[str, str | None]:
    """(mode, forced tool name) from chat or responses ``tool_choice``."""
    if isinstance(value, str):
        return (value if value in ("none", "required") else "auto"), None
    if isinstance(value, dict):
        if value.get("type") == "function":
            name = (value.get("function") or {}).get("name") or value.get("name")
            return "required", name
        if value.get("type") == "allowed_tools" and value.get("mode") == "required":
            return "required", None
    return "auto", None


def chat_conversation(body: dict[str, Any]) -> Conversation:  # noqa: C901
    messages = [m for m in body.get("messages") or [] if isinstance(m, dict)]
    conv = Conversation()
    conv.system_text = "\n".join(
        _text_of(m.get("content")) for m in messages if m.get("role") in ("system", "developer")
    )
    for message in reversed(messages):
        if message.get("role") == "user" and (text := _text_of(message.get("content"))):
            conv.user_text = text
            break
    for tool in body.get("tools") or []:
        if isinstance(tool, dict) and tool.get("type", "function") == "function":
            function = tool.get("function") or {}
            if function.get("name"):
                conv.tools.append(ToolSpec(function["name"], function.get("parameters") or {}))
    for function in body.get("functions") or []:  # the deprecated form
        if isinstance(function, dict) and function.get("name"):
            conv.tools.append(ToolSpec(function["name"], function.get("parameters") or {}))

    call_names: dict[str, str] = {}
    for message in messages:
        for call in message.get("tool_calls") or []:
            if isinstance(call, dict):
                call_names[call.get("id", "")] = (call.get("function") or {}).get("name", "")
    results: list[str] = []
    for message in reversed(messages):
        if message.get("role") == "tool":
            results.append(call_names.get(message.get("tool_call_id", ""), ""))
        elif message.get("role") == "function":
            results.append(message.get("name", ""))
        else:
            break
    conv.tool_results = results or None
    conv.tool_choice, conv.forced_tool = _tool_choice(body.get("tool_choice"))
    return conv


def responses_conversation(body: dict[str, Any]) -> Conversation:
    conv = Conversation()
    system = [body["instructions"]] if isinstance(body.get("instructions"), str) else []
    items = body.get("input")
    if isinstance(items, str):
        items = [{"role": "user", "content": items}]
    items = [item for item in items or [] if isinstance(item, dict)]
    call_names: dict[str, str] = {}
    for item in items:
        role = item.get("role")
        if role in ("system", "developer"):
            system.append(_text_of(item.get("content")))
        if item.get("type") == "function_call":
            call_names[item.get("call_id", "")] = item.get("name", "")
    conv.system_text = "\n".join(system)
    for item in reversed(items):
        if item.get("role") == "user" and (text := _text_of(item.get("content"))):
            conv.user_text = text
            break
    results: list[str] = []
    for item in reversed(items):
        if item.get("type") == "function_call_output":
            results.append(call_names.get(item.get("call_id", ""), ""))
        else:
            break
    conv.tool_results = results or None
    for tool in body.get("tools") or []:
        if isinstance(tool, dict) and tool.get("type") == "function" and tool.get("name"):
            conv.tools.append(ToolSpec(tool["name"], tool.get("parameters") or {}))
    conv.tool_choice, conv.forced_tool = _tool_choice(body.get("tool_choice"))
    reasoning = body.get("reasoning")
    conv.thinking_requested = isinstance(reasoning, dict) and bool(reasoning.get("summary"))
    return conv


# --------------------------------------------------------------------------------------------------
# POST /v1/chat/completions (and /v1beta/openai/chat/completions)


async def chat_completions(request: web.Request) -> web.StreamResponse:
    ex = Exchange(request, WIRE)
    if (early := ex.parse_json()) is not None:
        return early
    if (early := await ex.resolve(chat_conversation(ex.body))) is not None:
        return early
    body = ex.body
    reply = ex.reply
    model = ex.model(body.get("model"), "gpt-4o-mini")
    usage = ex.usage_payload(chat_usage)
    completion_id = ex.ident("chatcmpl-")
    call_id = ex.ident("call_")
    finish_reason = "tool_calls" if reply.tool_call else "stop"
    base = {
        "id": completion_id,
        "created": ex.created,
        "model": model,
        "service_tier": "default",
        "system_fingerprint": "fp_mock",
    }

    if not body.get("stream"):
        message: dict[str, Any] = {
            "role": "assistant",
            "content": reply.text,
            "refusal": None,
            "annotations": [],
        }
        if reply.tool_call:
            message["tool_calls"] = [
                {
                    "id": call_id,
                    "type": "function",
                    "function": {"name": reply.tool_call.name, "arguments": reply.tool_call.arguments_json},
                }
            ]
        payload = {
            **base,
            "object": "chat.completion",
            "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish_reason}],
        }
        if usage is not None:
            payload["usage"] = usage
        return await ex.send_json(payload)

    include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
    usage_in_last = ex.scenario.has("usage-in-last-chunk")

    def chunk(delta: dict[str, Any], finish: str | None = None, chunk_usage: Any = None) -> bytes:
        data: dict[str, Any] = {
            **base,
            "object": "chat.completion.chunk",
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        }
        if include_usage or chunk_usage is not None:
            data["usage"] = chunk_usage
        return sse_event(data)

    events: list[bytes] = []
    if reply.tool_call:
        pieces = split_text(reply.tool_call.arguments_json, ex.scenario.chunks)
        first_call = {
            "index": 0,
            "id": call_id,
            "type": "function",
            "function": {"name": reply.tool_call.name, "arguments": ""},
        }
        events.append(
            chunk({"role": "assistant", "content": None, "tool_calls": [first_call], "refusal": None})
        )
        events += [chunk({"tool_calls": [{"index": 0, "function": {"arguments": p}}]}) for p in pieces]
    else:
        pieces = split_text(reply.text or "", ex.scenario.chunks)
        events.append(chunk({"role": "assistant", "content": "", "refusal": None}))
        events += [chunk({"content": p}) for p in pieces]
    events.append(chunk({}, finish_reason, usage if usage_in_last else None))
    if include_usage and usage is not None and not usage_in_last:
        data = {**base, "object": "chat.completion.chunk", "choices": [], "usage": usage}
        events.append(sse_event(data))
    events.append(sse_event("[DONE]"))
    error = error_object(500, ex.scenario.error_message, ex.scenario.error_type)
    return await ex.send_stream(
        events, cut_default=cut_point(1, len(pieces)), error_tail=[sse_event({"error": error})]
    )


# --------------------------------------------------------------------------------------------------
# POST /v1/responses


async def responses(request: web.Request) -> web.StreamResponse:  # noqa: C901
    ex = Exchange(request, WIRE)
    if (early := ex.parse_json()) is not None:
        return early
    if (early := await ex.resolve(responses_conversation(ex.body))) is not None:
        return early
    body = ex.body
    reply = ex.reply
    model = ex.model(body.get("model"), "gpt-4o-mini")
    usage = ex.usage_payload(responses_usage)
    reasoning_id, message_id, call_item_id = ex.ident("rs_"), ex.ident("msg_"), ex.ident("fc_")
    call_id = ex.ident("call_")

    reasoning_item = None
    if reply.thinking:
        summary = [{"type": "summary_text", "text": reply.thinking}]
        reasoning_item = {"id": reasoning_id, "type": "reasoning", "summary": summary}
    if reply.tool_call:
        main_item: dict[str, Any] = {
            "id": call_item_id,
            "type": "function_call",
            "status": "completed",
            "call_id": call_id,
            "name": reply.tool_call.name,
            "arguments": reply.tool_call.arguments_json,
        }
    else:
        text_part = {"type": "output_text", "text": reply.text or "", "annotations": [], "logprobs": []}
        main_item = {
            "id": message_id,
            "type": "message",
            "status": "completed",
            "role": "assistant",
            "content": [text_part],
        }
    output = [item for item in (reasoning_item, main_item) if item is not None]

    def response_object(status: str, items: list[dict[str, Any]], with_usage: bool) -> dict[str, Any]:
        reasoning = body.get("reasoning") if isinstance(body.get("reasoning"), dict) else {}
        data = {
            "id": ex.ident("resp_"),
            "object": "response",
            "created_at": ex.created,
            "status": status,
            "background": False,
            "error": None,
            "incomplete_details": None,
            "instructions": body.get("instructions"),
            "max_output_tokens": body.get("max_output_tokens"),
            "metadata": body.get("metadata") or {},
            "model": model,
            "output": items,
            "parallel_tool_calls": body.get("parallel_tool_calls", True),
            "previous_response_id": body.get("previous_response_id"),
            "reasoning": {"effort": reasoning.get("effort"), "summary": reasoning.get("summary")},
            "service_tier": "default",
            "store": body.get("store", True),
            "temperature": body.get("temperature", 1.0),
            "text": body.get("text") or {"format": {"type": "text"}},
            "tool_choice": body.get("tool_choice", "auto"),
            "tools": body.get("tools") or [],
            "top_p": body.get("top_p", 1.0),
            "truncation": body.get("truncation", "disabled"),
            "user": None,
            "usage": None,
        }
        if with_usage and usage is not None:
            data["usage"] = usage
        elif with_usage:
            del data["usage"]
        return data

    if not body.get("stream"):
        return await ex.send_json(response_object("completed", output, with_usage=True))

    events: list[bytes] = []

    def emit(event_type: str, **fields: Any) -> None:
        data = {"type": event_type, "sequence_number": len(events), **fields}
        events.append(sse_event(data, event_type))

    emit("response.created", response=response_object("in_progress", [], with_usage=False))
    emit("response.in_progress", response=response_object("in_progress", [], with_usage=False))
    index = 0
    if reasoning_item is not None and reply.thinking:
        where = {"item_id": reasoning_id, "output_index": index}
        emit("response.output_item.added", output_index=index, item={**reasoning_item, "summary": []})
        emit(
            "response.reasoning_summary_part.added",
            **where,
            summary_index=0,
            part={"type": "summary_text", "text": ""},
        )
        emit("response.reasoning_summary_text.delta", **where, summary_index=0, delta=reply.thinking)
        emit("response.reasoning_summary_text.done", **where, summary_index=0, text=reply.thinking)
        emit(
            "response.reasoning_summary_part.done",
            **where,
            summary_index=0,
            part={"type": "summary_text", "text": reply.thinking},
        )
        emit("response.output_item.done", output_index=index, item=reasoning_item)
        index += 1
    content_start = len(events)
    if reply.tool_call:
        pieces = split_text(reply.tool_call.arguments_json, ex.scenario.chunks)
        where = {"item_id": call_item_id, "output_index": index}
        emit(
            "response.output_item.added",
            output_index=index,
            item={**main_item, "status": "in_progress", "arguments": ""},
        )
        content_start = len(events)
        for piece in pieces:
            emit("response.function_call_arguments.delta", **where, delta=piece)
        emit(
            "response.function_call_arguments.done",
            **where,
            name=reply.tool_call.name,
            arguments=reply.tool_call.arguments_json,
        )
        emit("response.output_item.done", output_index=index, item=main_item)
    else:
        text = reply.text or ""
        pieces = split_text(text, ex.scenario.chunks)
        where = {"item_id": message_id, "output_index": index, "content_index": 0}
        emit(
            "response.output_item.added",
            output_index=index,
            item={**main_item, "status": "in_progress", "content": []},
        )
        emit(
            "response.content_part.added",
            **where,
            part={"type": "output_text", "text": "", "annotations": [], "logprobs": []},
        )
        content_start = len(events)
        for piece in pieces:
            emit("response.output_text.delta", **where, delta=piece, logprobs=[])
        emit("response.output_text.done", **where, text=text, logprobs=[])
        emit("response.content_part.done", **where, part=main_item["content"][0])
        emit("response.output_item.done", output_index=index, item=main_item)
    emit("response.completed", response=response_object("completed", output, with_usage=True))

    error = error_object(500, ex.scenario.error_message, ex.scenario.error_type)
    cut = cut_point(content_start, len(pieces))
    error_event = {
        "type": "error",
        "sequence_number": cut,
        "code": error["type"],
        "message": error["message"],
        "param": None,
    }
    return await ex.send_stream(events, cut_default=cut, error_tail=[sse_event(error_event, "error")])


# --------------------------------------------------------------------------------------------------
# POST /v1/completions (legacy)


async def completions(request: web.Request) -> web.StreamResponse:
    ex = Exchange(request, WIRE)
    if (early := ex.parse_json()) is not None:
        return early
    body = ex.body
    prompt = body.get("prompt")
    prompt_text = (
        prompt if isinstance(prompt, str) else " ".join(p for p in prompt or [] if isinstance(p, str))
    )
    if (early := await ex.resolve(Conversation(user_text=prompt_text))) is not None:
        return early
    model = ex.model(body.get("model"), "gpt-3.5-turbo-instruct")
    usage = ex.usage_payload(completions_usage)
    text = ex.reply.text or ""
    base = {"id": ex.ident("cmpl-"), "object": "text_completion", "created": ex.created, "model": model}

    def choice(piece: str, finish: str | None) -> dict[str, Any]:
        return {"text": piece, "index": 0, "logprobs": None, "finish_reason": finish}

    if not body.get("stream"):
        payload = {**base, "choices": [choice(text, "stop")]}
        if usage is not None:
            payload["usage"] = usage
        return await ex.send_json(payload)

    include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
    pieces = split_text(text, ex.scenario.chunks)
    events = []
    for piece in pieces:
        data: dict[str, Any] = {**base, "choices": [choice(piece, None)]}
        if include_usage:
            data["usage"] = None
        events.append(sse_event(data))
    last: dict[str, Any] = {**base, "choices": [choice("", "stop")]}
    if include_usage:
        last["usage"] = None
    events.append(sse_event(last))
    if include_usage and usage is not None:
        events.append(sse_event({**base, "choices": [], "usage": usage}))
    events.append(sse_event("[DONE]"))
    error = error_object(500, ex.scenario.error_message, ex.scenario.error_type)
    return await ex.send_stream(
        events, cut_default=cut_point(0, len(pieces)), error_tail=[sse_event({"error": error})]
    )


# --------------------------------------------------------------------------------------------------
# POST /v1/embeddings


def _embedding(index: int, dims: int) -> list[float]:
    return [round(((index + 1) * (j + 3) % 17) / 17 - 0.5, 6) for j in range(dims)]


async def embeddings(request: web.Request) -> web.StreamResponse:
    ex = Exchange(request, WIRE)
    if (early := ex.parse_json()) is not None:
        return early
    body = ex.body
    raw_input = body.get("input")
    if isinstance(raw_input, str) or (
        isinstance(raw_input, list) and raw_input and all(isinstance(t, int) for t in raw_input)
    ):
        inputs: list[Any] = [raw_input]
    elif isinstance(raw_input, list):
        inputs = raw_input
    else:
        return ex.error_response(400, "'input' is a required property")
    text = next((item for item in inputs if isinstance(item, str)), "")
    if (early := await ex.resolve(Conversation(user_text=text))) is not None:
        return early
    dims = body.get("dimensions") if isinstance(body.get("dimensions"), int) else 8
    data = []
    for index in range(len(inputs)):
        vector = _embedding(index, dims)
        if body.get("encoding_format") == "base64":
            encoded: Any = base64.b64encode(struct.pack(f"<{dims}f", *vector)).decode()
        else:
            encoded = vector
        data.append({"object": "embedding", "index": index, "embedding": encoded})
    payload: dict[str, Any] = {
        "object": "list",
        "data": data,
        "model": ex.model(body.get("model"), "text-embedding-3-small"),
    }
    usage = ex.usage_payload(embeddings_usage)
    if usage is not None:
        payload["usage"] = usage
    return await ex.send_json(payload)


# --------------------------------------------------------------------------------------------------
# GET /v1/models, GET /v1/models/{model}

MODELS = ["gpt-4o", "gpt-4o-mini", "gpt-4.1", "gpt-5", "o3-mini", "text-embedding-3-small"]


def _model_object(model_id: str) -> dict[str, Any]:
    return {"id": model_id, "object": "model", "created": 1_700_000_000, "owned_by": "mock-upstream"}


async def list_models(request: web.Request) -> web.StreamResponse:
    ex = Exchange(request, WIRE)
    if (early := await ex.resolve(Conversation())) is not None:
        return early
    return await ex.send_json({"object": "list", "data": [_model_object(m) for m in MODELS]})


async def retrieve_model(request: web.Request) -> web.StreamResponse:
    ex = Exchange(request, WIRE)
    if (early := await ex.resolve(Conversation())) is not None:
        return early
    return await ex.send_json(_model_object(request.match_info["model"]))


ROUTES: list[tuple[str, str, Any]] = [
    ("POST", "/v1/chat/completions", chat_completions),
    ("POST", "/v1/responses", responses),
    ("POST", "/v1/completions", completions),
    ("POST", "/v1/embeddings", embeddings),
    ("GET", "/v1/models", list_models),
    ("GET", "/v1/models/{model}", retrieve_model),
    # Gemini's OpenAI-compatible API
    ("POST", "/v1beta/openai/chat/completions", chat_completions),
    ("POST", "/v1beta/openai/embeddings", embeddings),
    ("GET", "/v1beta/openai/models", list_models),
    ("GET", "/v1beta/openai/models/{model}", retrieve_model),
]
