"""The ``anthropic-openai`` route: OpenAI Chat Completions in front, Anthropic Messages behind.

A client using an OpenAI SDK sends ``POST /v1/chat/completions`` with
``X-Majordomo-Provider: anthropic-openai``; the gateway sends the equivalent Messages request to
``<anthropic base>/v1/messages`` and translates the answer back: a ``chat.completion``, or for
``stream: true`` a stream of ``chat.completion.chunk`` events ending in ``data: [DONE]``.  The
row is recorded from Anthropic's own answer (provider ``anthropic``, route ``anthropic-openai``),
so cache reads and writes are priced exactly as on ``/v1/messages``.

Request, OpenAI → Anthropic:

- ``system`` and ``developer`` messages → ``system`` (text blocks, in order);
- ``user`` content, a string or parts (``text``, ``image_url`` as a data: URL or an http(s) URL,
  ``file`` with base64 ``file_data``) → content blocks; ``cache_control`` on a part is kept;
- ``assistant`` content and ``tool_calls`` → text and ``tool_use`` blocks;
- ``tool`` messages → ``tool_result`` blocks in a user turn (consecutive turns of one role merge);
- ``tools`` → ``tools`` (``parameters`` → ``input_schema``); ``tool_choice`` ``auto``/``none``/
  ``required``/a named function → ``auto``/``none``/``any``/``tool``; ``parallel_tool_calls:
  false`` → ``disable_parallel_tool_use``;
- ``stop`` → ``stop_sequences``; ``temperature`` (capped at 1, Anthropic's maximum), ``top_p``;
- ``max_completion_tokens`` or ``max_tokens`` → ``max_tokens``, ``DEFAULT_MAX_TOKENS`` when
  neither is given (Anthropic requires it); ``user`` → ``metadata.user_id``;
- ``thinking`` and ``top_k`` (e.g. from the SDK's ``extra_body``) are passed on as they are;
- other OpenAI parameters (``frequency_penalty``, ``logprobs``, ``response_format``, ``seed``...)
  have no Anthropic equivalent and are dropped; ``n`` > 1, audio input and the legacy
  ``functions`` get a 400.

Headers: ``Authorization: Bearer <key>`` becomes ``x-api-key: <key>``; ``anthropic-version``
defaults to ``ANTHROPIC_VERSION``; ``anthropic-beta`` and anything else the client sends go on
untouched, except ``OpenAI-*`` headers and ``Accept-Encoding`` (the answer must be readable to be
translated).

Response, Anthropic → OpenAI: text blocks → ``content``; ``tool_use`` → ``tool_calls``; thinking
blocks are not relayed; ``stop_reason`` → ``finish_reason`` (``end_turn``/``stop_sequence`` →
``stop``, ``max_tokens`` → ``length``, ``tool_use`` → ``tool_calls``, ``refusal`` →
``content_filter``); usage → ``prompt_tokens`` (uncached + cache reads + cache writes),
``completion_tokens``, ``prompt_tokens_details.cached_tokens``.  A stream gets a usage-only chunk
(``choices: []``) before ``[DONE]`` only when the request asked for
``stream_options.include_usage``.  An error answer becomes OpenAI's ``{"error": {...}}``; an
``event: error`` in the stream becomes ``data: {"error": {...}}``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

import orjson

from majordomo_gateway.providers.anthropic import usage_from_anthropic
from majordomo_gateway.providers.base import Provider, RequestInfo
from majordomo_gateway.providers.sse import SSEFramer, json_object, parse_event
from majordomo_gateway.proxy.adapter import AdaptedRequest, AdapterError, ResponseTransform
from majordomo_gateway.usage import InvalidUsage

__all__ = [
    "ANTHROPIC_VERSION",
    "DEFAULT_MAX_TOKENS",
    "AnthropicOpenAIAdapter",
    "to_anthropic_request",
    "to_openai_completion",
]

#: ``max_tokens`` sent to Anthropic when the OpenAI request sets neither max_tokens nor
#: max_completion_tokens (OpenAI makes it optional, Anthropic requires it).
DEFAULT_MAX_TOKENS = 4096
#: ``anthropic-version`` sent when the client does not send one.
ANTHROPIC_VERSION = "2023-06-01"
CHAT_PATH = "/v1/chat/completions"
MESSAGES_PATH = b"/v1/messages"

_FINISH_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}
_PASSED_THROUGH = ("thinking", "top_k")
_DROPPED_HEADERS = frozenset({"authorization", "accept-encoding"})


def _invalid(message: str) -> AdapterError:
    return AdapterError("invalid_request", f"anthropic-openai: {message}")


# -- request -----------------------------------------------------------------------------------

def _block_with_cache_control(block: dict[str, Any], part: Mapping[str, Any]) -> dict[str, Any]:
    cache_control = part.get("cache_control")
    if isinstance(cache_control, Mapping):
        block["cache_control"] = cache_control
    return block


def _data_url(url: str, where: str) -> tuple[str, str]:
    """``data:image/png;base64,AAAA`` → ("image/png", "AAAA")."""
    header, comma, data = url.partition(",")
    media_type, _, encoding = header[5:].partition(";")
    if not comma or encoding != "base64" or not media_type:
        raise _invalid(f"{where}: a data: URL must look like data:<media type>;base64,<data>")
    return media_type, data


def _content_blocks(content: Any, where: str, *, user: bool) -> list[dict[str, Any]]:
    """Anthropic content blocks from an OpenAI message ``content`` (string, parts or null)."""
    if content is None:
        return []
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    if not isinstance(content, list):
        raise _invalid(f"{where}.content must be a string or a list of content parts")
    blocks: list[dict[str, Any]] = []
    for index, part in enumerate(content):
        block = _part_block(part, f"{where}.content[{index}]", user=user)
        if block is not None:
            blocks.append(block)
    return blocks


def _part_block(part: Any, where: str, *, user: bool) -> dict[str, Any] | None:
    """One content part's block; None for an empty text part."""
    if not isinstance(part, Mapping):
        raise _invalid(f"{where} must be an object")
    kind = part.get("type")
    if kind in ("text", "refusal"):
        text = part.get(kind)
        if not isinstance(text, str):
            raise _invalid(f"{where}.{kind} must be a string")
        return _block_with_cache_control({"type": "text", "text": text}, part) if text else None
    if kind == "image_url" and user:
        return _block_with_cache_control({"type": "image", "source": _image_source(part, where)}, part)
    if kind == "file" and user:
        return _block_with_cache_control({"type": "document", "source": _file_source(part, where)}, part)
    raise _invalid(f"{where}: content parts of type {kind!r} cannot be sent to Anthropic")


def _image_source(part: Mapping[str, Any], where: str) -> dict[str, Any]:
    image = part.get("image_url")
    url = image.get("url") if isinstance(image, Mapping) else image
    if not isinstance(url, str) or not url:
        raise _invalid(f"{where}.image_url.url must be a URL")
    if url.startswith("data:"):
        media_type, data = _data_url(url, where)
        return {"type": "base64", "media_type": media_type, "data": data}
    return {"type": "url", "url": url}


def _file_source(part: Mapping[str, Any], where: str) -> dict[str, Any]:
    file = part.get("file")
    data_url = file.get("file_data") if isinstance(file, Mapping) else None
    if not isinstance(data_url, str) or not data_url.startswith("data:"):
        raise _invalid(f"{where}: only files sent inline as file_data (a base64 data: URL) can be translated")
    media_type, data = _data_url(data_url, where)
    return {"type": "base64", "media_type": media_type, "data": data}


def _tool_use_blocks(tool_calls: Any, where: str) -> list[dict[str, Any]]:
    if tool_calls is None:
        return []
    if not isinstance(tool_calls, list):
        raise _invalid(f"{where}.tool_calls must be a list")
    blocks = []
    for index, call in enumerate(tool_calls):
        call_where = f"{where}.tool_calls[{index}]"
        function = call.get("function") if isinstance(call, Mapping) else None
        if not isinstance(function, Mapping) or not isinstance(function.get("name"), str):
            raise _invalid(f"{call_where} must be a function call with a name")
        arguments = function.get("arguments") or "{}"
        try:
            parsed = orjson.loads(arguments) if isinstance(arguments, str) else arguments
        except orjson.JSONDecodeError:
            raise _invalid(f"{call_where}.function.arguments is not valid JSON") from None
        if not isinstance(parsed, dict):
            raise _invalid(f"{call_where}.function.arguments must be a JSON object")
        blocks.append({"type": "tool_use", "id": call.get("id") or f"call_{index}", "name": function["name"],
                       "input": parsed})
    return blocks


def _tool_result_content(content: Any, where: str) -> str | list[dict[str, Any]]:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return _content_blocks(content, where, user=True)


def _append(messages: list[dict[str, Any]], role: str, blocks: list[dict[str, Any]]) -> None:
    """Consecutive turns of one role become one turn, as Anthropic expects."""
    if not blocks:
        return
    if messages and messages[-1]["role"] == role:
        messages[-1]["content"].extend(blocks)
    else:
        messages.append({"role": role, "content": blocks})


def _tools(tools: Any) -> list[dict[str, Any]]:
    if not isinstance(tools, list):
        raise _invalid("tools must be a list")
    converted = []
    for index, tool in enumerate(tools):
        function = tool.get("function") if isinstance(tool, Mapping) else None
        if not isinstance(tool, Mapping) or tool.get("type", "function") != "function" \
                or not isinstance(function, Mapping) or not isinstance(function.get("name"), str):
            raise _invalid(f"tools[{index}] must be a function tool with a name")
        entry: dict[str, Any] = {"name": function["name"]}
        if isinstance(function.get("description"), str):
            entry["description"] = function["description"]
        parameters = function.get("parameters")
        entry["input_schema"] = parameters if isinstance(parameters, Mapping) else {"type": "object",
                                                                                      "properties": {}}
        converted.append(_block_with_cache_control(entry, tool))
    return converted


def _tool_choice(choice: Any, parallel: Any) -> dict[str, Any] | None:
    result: dict[str, Any] | None
    if choice is None:
        result = None
    elif choice in ("auto", "none"):
        result = {"type": choice}
    elif choice == "required":
        result = {"type": "any"}
    elif isinstance(choice, Mapping) and choice.get("type") == "function":
        function = choice.get("function")
        name = function.get("name") if isinstance(function, Mapping) else None
        if not isinstance(name, str):
            raise _invalid("tool_choice.function.name must be a string")
        result = {"type": "tool", "name": name}
    else:
        raise _invalid("tool_choice must be 'auto', 'none', 'required' or {'type': 'function', ...}")
    if parallel is False and (result is None or result["type"] != "none"):
        result = {"type": "auto"} if result is None else result
        result["disable_parallel_tool_use"] = True
    return result


def _max_tokens(request: Mapping[str, Any]) -> int:
    for key in ("max_completion_tokens", "max_tokens"):
        value = request.get(key)
        if value is None:
            continue
        if type(value) is not int or value <= 0:
            raise _invalid(f"{key} must be a positive integer")
        return value
    return DEFAULT_MAX_TOKENS


def to_anthropic_request(request: Mapping[str, Any]) -> dict[str, Any]:
    """The Messages API request for an OpenAI Chat Completions request; AdapterError if impossible."""
    model = request.get("model")
    if not isinstance(model, str) or not model:
        raise _invalid("model must be a non-empty string")
    raw_messages = request.get("messages")
    if not isinstance(raw_messages, list) or not raw_messages:
        raise _invalid("messages must be a non-empty list")
    if request.get("n") not in (None, 1):
        raise _invalid("n must be 1: Anthropic returns one choice per request")
    if request.get("functions") is not None or request.get("function_call") is not None:
        raise _invalid("the deprecated functions/function_call are not supported: use tools/tool_choice")
    system, messages = _messages(raw_messages)
    body: dict[str, Any] = {"model": model, "max_tokens": _max_tokens(request), "messages": messages}
    if system:
        body["system"] = system
    _sampling(request, body)
    if request.get("tools"):
        body["tools"] = _tools(request["tools"])
        choice = _tool_choice(request.get("tool_choice"), request.get("parallel_tool_calls"))
        if choice is not None:
            body["tool_choice"] = choice
    user = request.get("user")
    if isinstance(user, str) and user:
        body["metadata"] = {"user_id": user}
    for key in _PASSED_THROUGH:
        if key in request:
            body[key] = request[key]
    if request.get("stream") is True:
        body["stream"] = True
    return body


def _messages(raw_messages: list[Any]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(system blocks, messages) from OpenAI's messages."""
    system: list[dict[str, Any]] = []
    messages: list[dict[str, Any]] = []
    for index, message in enumerate(raw_messages):
        where = f"messages[{index}]"
        if not isinstance(message, Mapping):
            raise _invalid(f"{where} must be an object")
        role = message.get("role")
        content = message.get("content")
        if role in ("system", "developer"):
            system.extend(_content_blocks(content, where, user=False))
        elif role == "user":
            _append(messages, "user", _content_blocks(content, where, user=True))
        elif role == "assistant":
            blocks = _content_blocks(content, where, user=False)
            blocks += _tool_use_blocks(message.get("tool_calls"), where)
            _append(messages, "assistant", blocks)
        elif role == "tool":
            _append(messages, "user", [_tool_result(message, where)])
        else:
            raise _invalid(f"{where}.role {role!r} is not supported")
    if not messages:
        raise _invalid("messages must contain at least one user or assistant message")
    return system, messages


def _tool_result(message: Mapping[str, Any], where: str) -> dict[str, Any]:
    tool_call_id = message.get("tool_call_id")
    if not isinstance(tool_call_id, str):
        raise _invalid(f"{where}.tool_call_id must be a string")
    return {"type": "tool_result", "tool_use_id": tool_call_id,
            "content": _tool_result_content(message.get("content"), where)}


def _sampling(request: Mapping[str, Any], body: dict[str, Any]) -> None:
    """``stop``, ``temperature`` and ``top_p`` onto ``body``."""
    stop = request.get("stop")
    if isinstance(stop, str):
        body["stop_sequences"] = [stop]
    elif isinstance(stop, list) and stop:
        body["stop_sequences"] = [s for s in stop if isinstance(s, str)]
    temperature = request.get("temperature")
    if isinstance(temperature, int | float) and not isinstance(temperature, bool):
        body["temperature"] = min(temperature, 1)
    top_p = request.get("top_p")
    if isinstance(top_p, int | float) and not isinstance(top_p, bool):
        body["top_p"] = top_p


def _anthropic_headers(headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    bearer: str | None = None
    has_key = has_version = False
    for name, value in headers:
        lowered = name.lower()
        if lowered in _DROPPED_HEADERS:
            if lowered == "authorization":
                scheme, _, token = value.strip().partition(" ")
                if scheme.lower() == "bearer" and token.strip():
                    bearer = token.strip()
            continue
        if lowered.startswith("openai-"):
            continue
        if lowered == "x-api-key":
            has_key = True
        elif lowered == "anthropic-version":
            has_version = True
        out.append((name, value))
    if bearer is not None and not has_key:
        out.append(("x-api-key", bearer))
    if not has_version:
        out.append(("anthropic-version", ANTHROPIC_VERSION))
    return out


# -- response ----------------------------------------------------------------------------------

def _openai_usage(usage: Mapping[str, Any]) -> dict[str, Any] | None:
    """OpenAI's usage object; None when Anthropic's is not usage (the row says why, as ``invalid``)."""
    try:
        counted = usage_from_anthropic(usage)
    except InvalidUsage:
        return None
    return {
        "prompt_tokens": counted.input_tokens,
        "completion_tokens": counted.output_tokens,
        "total_tokens": counted.input_tokens + counted.output_tokens,
        "prompt_tokens_details": {"cached_tokens": counted.cached_tokens,
                                  "cache_write_tokens": counted.cache_creation_tokens},
        "completion_tokens_details": {"reasoning_tokens": counted.reasoning_tokens},
    }


def _finish_reason(stop_reason: Any) -> str | None:
    if stop_reason is None:
        return None
    # Any other value (a reason of a newer API version, or junk such as a list) ends as "stop".
    return _FINISH_REASONS.get(stop_reason, "stop") if isinstance(stop_reason, str) else "stop"


def to_openai_completion(message: Mapping[str, Any], *, created: int, fallback_model: str | None) -> dict[str, Any]:
    """A ``chat.completion`` from an Anthropic Message."""
    texts: list[str] = []
    tool_calls: list[dict[str, Any]] = []
    content = message.get("content")
    for block in content if isinstance(content, list) else ():
        if not isinstance(block, Mapping):
            continue
        kind = block.get("type")
        if kind == "text" and isinstance(block.get("text"), str):
            texts.append(block["text"])
        elif kind == "tool_use":
            tool_calls.append({"id": block.get("id"), "type": "function",
                               "function": {"name": block.get("name"),
                                            "arguments": orjson.dumps(block.get("input") or {}).decode()}})
    reply: dict[str, Any] = {"role": "assistant", "content": "".join(texts) if texts else None, "refusal": None}
    if tool_calls:
        reply["tool_calls"] = tool_calls
    completion: dict[str, Any] = {
        "id": message.get("id"),
        "object": "chat.completion",
        "created": created,
        "model": message.get("model") or fallback_model,
        "choices": [{"index": 0, "message": reply, "logprobs": None,
                     "finish_reason": _finish_reason(message.get("stop_reason")) or "stop"}],
    }
    usage = message.get("usage")
    translated = _openai_usage(usage) if isinstance(usage, Mapping) else None
    if translated is not None:
        completion["usage"] = translated
    return completion


def _openai_error(body: bytes) -> bytes:
    obj = json_object(body)
    error = obj.get("error") if obj is not None else None
    if not isinstance(error, Mapping):
        return body
    return orjson.dumps({"error": _error_object(error)})


def _error_object(error: Mapping[str, Any]) -> dict[str, Any]:
    return {"message": error.get("message") or "unknown error", "type": error.get("type") or "api_error",
            "param": None, "code": None}


class _Buffered:
    """A whole JSON body, translated when it is complete."""

    __slots__ = ("_created", "_error", "_model", "_parts")

    def __init__(self, error: bool, model: str | None) -> None:
        self._parts: list[bytes] = []
        self._error = error
        self._model = model
        self._created = int(time.time())

    def feed(self, chunk: bytes) -> bytes:
        self._parts.append(chunk)
        return b""

    def finish(self) -> bytes:
        body = b"".join(self._parts)
        self._parts.clear()
        if self._error:
            return _openai_error(body)
        message = json_object(body)
        if message is None or message.get("type") == "error":
            return _openai_error(body)
        return orjson.dumps(to_openai_completion(message, created=self._created, fallback_model=self._model))


_DONE = b"data: [DONE]\n\n"


class _StreamTranslator:
    """Anthropic Messages SSE in, ``chat.completion.chunk`` SSE out, event by event."""

    __slots__ = ("_created", "_framer", "_id", "_include_usage", "_model", "_tool_index", "_usage")

    def __init__(self, include_usage: bool, model: str | None) -> None:
        self._framer = SSEFramer()
        self._include_usage = include_usage
        self._model = model
        self._id: str | None = None
        self._created = int(time.time())
        self._tool_index: dict[int, int] = {}
        self._usage: dict[str, Any] = {}

    def feed(self, chunk: bytes) -> bytes:
        out: list[bytes] = []
        for block in self._framer.feed(chunk):
            self._event(block, out)
        return b"".join(out)

    def finish(self) -> bytes:
        out: list[bytes] = []
        rest = self._framer.close()
        if rest is not None:
            self._event(rest, out)
        return b"".join(out)

    def _chunk(self, delta: dict[str, Any], finish_reason: str | None = None) -> bytes:
        data: dict[str, Any] = {
            "id": self._id,
            "object": "chat.completion.chunk",
            "created": self._created,
            "model": self._model,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}],
        }
        if self._include_usage:
            data["usage"] = None
        return b"data: " + orjson.dumps(data) + b"\n\n"

    def _event(self, block: bytes, out: list[bytes]) -> None:
        data = json_object(parse_event(block)[1])
        if data is None:
            return
        kind = data.get("type")
        handler = _HANDLERS.get(kind) if isinstance(kind, str) else None  # a list is not hashable
        if handler is not None:
            handler(self, data, out)

    def _content_block_delta(self, data: Mapping[str, Any], out: list[bytes]) -> None:
        delta = data.get("delta")
        if not isinstance(delta, Mapping):
            return
        delta_type = delta.get("type")
        if delta_type == "text_delta" and delta.get("text"):
            out.append(self._chunk({"content": delta["text"]}))
        elif delta_type == "input_json_delta" and delta.get("partial_json"):
            block_index = data.get("index")
            index = self._tool_index.get(block_index) if type(block_index) is int else None
            if index is not None:
                out.append(self._chunk({"tool_calls": [
                    {"index": index, "function": {"arguments": delta["partial_json"]}}]}))

    def _content_block_start(self, data: Mapping[str, Any], out: list[bytes]) -> None:
        block_data = data.get("content_block")
        if not isinstance(block_data, Mapping):
            return
        block_index = data.get("index")
        if block_data.get("type") == "tool_use" and type(block_index) is int:
            index = len(self._tool_index)
            self._tool_index[block_index] = index
            call = {"index": index, "id": block_data.get("id"), "type": "function",
                    "function": {"name": block_data.get("name"), "arguments": ""}}
            out.append(self._chunk({"tool_calls": [call]}))
        elif block_data.get("type") == "text" and block_data.get("text"):
            out.append(self._chunk({"content": block_data["text"]}))

    def _message_start(self, data: Mapping[str, Any], out: list[bytes]) -> None:
        message = data.get("message")
        if isinstance(message, Mapping):
            self._id = message.get("id")
            self._model = message.get("model") or self._model
            self._merge_usage(message.get("usage"))
        out.append(self._chunk({"role": "assistant", "content": ""}))

    def _message_delta(self, data: Mapping[str, Any], out: list[bytes]) -> None:
        self._merge_usage(data.get("usage"))
        delta = data.get("delta")
        stop_reason = delta.get("stop_reason") if isinstance(delta, Mapping) else None
        out.append(self._chunk({}, _finish_reason(stop_reason) or "stop"))

    def _message_stop(self, data: Mapping[str, Any], out: list[bytes]) -> None:
        usage = _openai_usage(self._usage) if self._include_usage else None
        if usage is not None:
            usage_chunk: dict[str, object] = {
                "id": self._id, "object": "chat.completion.chunk", "created": self._created,
                "model": self._model, "choices": [], "usage": usage}
            out.append(b"data: " + orjson.dumps(usage_chunk) + b"\n\n")
        out.append(_DONE)

    def _error(self, data: Mapping[str, Any], out: list[bytes]) -> None:
        error = data.get("error")
        out.append(b"data: " + orjson.dumps(
            {"error": _error_object(error if isinstance(error, Mapping) else {})}) + b"\n\n")

    def _merge_usage(self, usage: Any) -> None:
        # message_delta's counts are cumulative; a field it leaves out keeps message_start's value.
        if isinstance(usage, Mapping):
            self._usage.update((k, v) for k, v in usage.items() if v is not None)


_Handler = Callable[[_StreamTranslator, Mapping[str, Any], list[bytes]], None]
# Anthropic's events by type; others (ping, content_block_stop) have nothing to translate.
_HANDLERS: dict[str, _Handler] = {
    "content_block_delta": _StreamTranslator._content_block_delta,
    "content_block_start": _StreamTranslator._content_block_start,
    "message_start": _StreamTranslator._message_start,
    "message_delta": _StreamTranslator._message_delta,
    "message_stop": _StreamTranslator._message_stop,
    "error": _StreamTranslator._error,
}


class AnthropicOpenAIAdapter:
    """The route adapter; stateless, one instance serves every request."""

    __slots__ = ()

    def adapt(self, provider: Provider, path: str, body: bytes,
              headers: list[tuple[str, str]]) -> AdaptedRequest:
        if path.rstrip("/") != CHAT_PATH:
            raise AdapterError("unsupported_path",
                               f"the anthropic-openai route serves only POST {CHAT_PATH}, not {path!r}")
        request = json_object(body)
        if request is None:
            raise _invalid("the body must be a JSON object (an OpenAI chat completions request)")
        translated = to_anthropic_request(request)
        stream = request.get("stream") is True
        options = request.get("stream_options")
        include_usage = stream and isinstance(options, Mapping) and options.get("include_usage") is True
        model = translated["model"]

        def response(status: int, content_type: str) -> ResponseTransform:
            if status < 400 and content_type.startswith("text/event-stream"):
                return _StreamTranslator(include_usage, model)
            return _Buffered(status >= 400, model)

        return AdaptedRequest(
            info=RequestInfo(model=model, stream=stream, include_usage=include_usage if stream else None),
            body=orjson.dumps(translated),
            headers=_anthropic_headers(headers),
            path=MESSAGES_PATH,
            response=response,
        )
