"""A simulated provider behind the demo gateway: it answers what the proxy sends upstream, in each
provider's wire format, without a network.

It fits proxy/upstream_api.Upstream, so the gateway's own pipeline (authentication, routing,
relay, usage parsing, pricing, the writer) runs exactly as in production: only the last hop is
replaced.  What an answer holds comes from two request headers the demo traffic sets (a caller
without them gets plausible defaults, so ``curl`` against a running demo works too):

    X-Demo-Usage: in=1200,out=340,cached=800,cache_write=0,reasoning=0
    X-Demo-Outcome: ok | rate_limited | server_error | bad_request
"""

from __future__ import annotations

import asyncio
import base64
import random
import struct
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import orjson

from majordomo_gateway.providers.registry import PROVIDERS
from majordomo_gateway.proxy.upstream import Origin, Sink

__all__ = ["DemoUsage", "SimulatedUpstream"]

USAGE_HEADER = "x-demo-usage"
OUTCOME_HEADER = "x-demo-outcome"
_WORDS = ("the", "cost", "of", "each", "feature", "is", "tracked", "per", "request", "and", "summed",
          "by", "user", "step", "model", "so", "teams", "see", "where", "tokens", "go")
# status, provider error type, message: what providers answer when they refuse
_OUTCOMES: dict[str, tuple[int, str, str]] = {
    "rate_limited": (429, "rate_limit_exceeded", "Rate limit reached for requests (simulated)."),
    "server_error": (500, "server_error", "The server had an error while processing your request (simulated)."),
    "bad_request": (400, "invalid_request_error", "Invalid request: 'messages' is too long (simulated)."),
}


@dataclass(frozen=True, slots=True)
class DemoUsage:
    input: int = 0
    output: int = 0
    cached: int = 0
    cache_write: int = 0
    reasoning: int = 0

    def header(self) -> str:
        return (f"in={self.input},out={self.output},cached={self.cached},"
                f"cache_write={self.cache_write},reasoning={self.reasoning}")

    @classmethod
    def parse(cls, text: str) -> DemoUsage:
        fields = {"in": 0, "out": 0, "cached": 0, "cache_write": 0, "reasoning": 0}
        for part in text.split(","):
            name, _, value = part.partition("=")
            if name.strip() in fields and value.strip().isdigit():
                fields[name.strip()] = int(value)
        return cls(fields["in"], fields["out"], fields["cached"], fields["cache_write"], fields["reasoning"])


@dataclass(slots=True)
class _Answer:
    """One simulated response; fits proxy/upstream_api.UpstreamAnswer."""

    status: int
    content_type: bytes
    chunks: list[bytes]
    #: seconds to wait before each chunk after the first (a stream's pace)
    pace: float = 0.0
    raw_headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    content_length: int | None = None
    content_encoding: bytes = b""
    _sent: int = 0

    def __post_init__(self) -> None:
        self.raw_headers = [(b"Content-Type", self.content_type)]
        if self.pace == 0.0:
            self.content_length = sum(len(c) for c in self.chunks)
            self.raw_headers.append((b"Content-Length", str(self.content_length).encode()))

    @property
    def at_eof(self) -> bool:
        return self._sent >= len(self.chunks)

    async def readany(self) -> bytes:
        if self.at_eof:
            return b""
        if self._sent and self.pace:
            await asyncio.sleep(self.pace)
        chunk = self.chunks[self._sent]
        self._sent += 1
        return chunk

    async def read(self) -> bytes:
        parts = []
        while chunk := await self.readany():
            parts.append(chunk)
        return b"".join(parts)

    def set_sink(self, sink: Sink | None) -> None:
        """Never calls the sink: the relay then reads with readany(), which paces the stream."""

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    async def __aenter__(self) -> _Answer:
        return self

    async def __aexit__(self, *exc: object) -> None:
        pass


class SimulatedUpstream:
    """Answers OpenAI chat completions and embeddings, Anthropic messages and Gemini
    generateContent / streamGenerateContent, as JSON or as a stream, after a realistic delay.
    ``speed`` divides every delay (tests run the demo fast)."""

    def __init__(self, seed: int = 0, speed: float = 1.0) -> None:
        self._rng = random.Random(seed)
        self._speed = speed

    async def close(self) -> None:
        pass

    async def request(self, origin: Origin, method: str, target: bytes, headers: list[tuple[str, str]],
                      body: bytes) -> _Answer:
        path, _, query = target.decode("latin-1").partition("?")
        lowered = {name.lower(): value for name, value in headers}
        request = _json_object(body)
        model = str(request.get("model") or _gemini_model(path) or "unknown")
        usage = (DemoUsage.parse(lowered[USAGE_HEADER]) if USAGE_HEADER in lowered
                 else self._default_usage(body))
        outcome = lowered.get(OUTCOME_HEADER, "ok")
        kind = _kind(path)
        await asyncio.sleep(self._delay(0.08, 0.45 if kind != "embeddings" else 0.05))
        if outcome in _OUTCOMES:
            return self._error(kind, *_OUTCOMES[outcome])
        if kind == "openai_chat":
            return self._openai_chat(model, usage, request.get("stream") is True,
                                     _include_usage(request))
        if kind == "embeddings":
            return _json_answer(_embeddings(model, usage, request.get("encoding_format") == "base64"))
        if kind == "anthropic":
            return self._anthropic(model, usage, request.get("stream") is True)
        if kind == "gemini":
            return self._gemini(model, usage, ":streamGenerateContent" in path, "alt=sse" in query)
        return _json_answer({"error": {"message": f"the demo's simulated provider has no {path}",
                                       "type": "invalid_request_error"}}, status=404)

    # -- answers, in each provider's wire format ------------------------------------------------

    def _openai_chat(self, model: str, usage: DemoUsage, stream: bool, include_usage: bool) -> _Answer:
        ident = f"chatcmpl-{uuid.uuid4().hex[:24]}"
        text = self._text(usage.output)
        usage_obj = {
            "prompt_tokens": usage.input, "completion_tokens": usage.output,
            "total_tokens": usage.input + usage.output,
            "prompt_tokens_details": {"cached_tokens": usage.cached},
            "completion_tokens_details": {"reasoning_tokens": usage.reasoning},
        }
        head = {"id": ident, "object": "chat.completion", "created": 1_764_000_000, "model": model}
        if not stream:
            message = {"role": "assistant", "content": " ".join(text)}
            return _json_answer({**head, "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
                                 "usage": usage_obj})
        head["object"] = "chat.completion.chunk"
        events = [{**head, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]}]
        events += [{**head, "choices": [{"index": 0, "delta": {"content": f" {piece}"}}]} for piece in text]
        events.append({**head, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
        if include_usage:
            events.append({**head, "choices": [], "usage": usage_obj})
        chunks = [b"data: " + orjson.dumps(e) + b"\n\n" for e in events] + [b"data: [DONE]\n\n"]
        return _Answer(200, b"text/event-stream", chunks, pace=self._pace())

    def _anthropic(self, model: str, usage: DemoUsage, stream: bool) -> _Answer:
        ident = f"msg_{uuid.uuid4().hex[:24]}"
        text = self._text(usage.output)
        usage_obj = {"input_tokens": usage.input, "output_tokens": usage.output,
                     "cache_creation_input_tokens": usage.cache_write, "cache_read_input_tokens": usage.cached}
        if not stream:
            return _json_answer({"id": ident, "type": "message", "role": "assistant", "model": model,
                                 "content": [{"type": "text", "text": " ".join(text)}],
                                 "stop_reason": "end_turn", "stop_sequence": None, "usage": usage_obj})
        start: dict[str, object] = {"type": "message_start", "message": {
            "id": ident, "type": "message", "role": "assistant", "model": model, "content": [],
            "stop_reason": None, "stop_sequence": None, "usage": {**usage_obj, "output_tokens": 1}}}
        events: list[tuple[str, dict[str, object]]] = [
            ("message_start", start),
            ("content_block_start", {"type": "content_block_start", "index": 0,
                                     "content_block": {"type": "text", "text": ""}}),
        ]
        events += [("content_block_delta", {"type": "content_block_delta", "index": 0,
                                             "delta": {"type": "text_delta", "text": f" {piece}"}})
                   for piece in text]
        events += [
            ("content_block_stop", {"type": "content_block_stop", "index": 0}),
            ("message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                               "usage": {"output_tokens": usage.output}}),
            ("message_stop", {"type": "message_stop"}),
        ]
        chunks = [f"event: {name}\n".encode() + b"data: " + orjson.dumps(data) + b"\n\n" for name, data in events]
        return _Answer(200, b"text/event-stream", chunks, pace=self._pace())

    def _gemini(self, model: str, usage: DemoUsage, stream: bool, sse: bool) -> _Answer:
        text = self._text(usage.output)
        metadata = {"promptTokenCount": usage.input, "candidatesTokenCount": usage.output,
                    "totalTokenCount": usage.input + usage.output + usage.reasoning,
                    "cachedContentTokenCount": usage.cached, "thoughtsTokenCount": usage.reasoning}
        ident = uuid.uuid4().hex[:20]

        def candidate(words: Sequence[str], final: bool) -> dict[str, object]:
            content: dict[str, object] = {"content": {"parts": [{"text": " ".join(words)}], "role": "model"},
                                          "index": 0}
            if final:
                content["finishReason"] = "STOP"
            return content

        if not stream:
            return _json_answer({"candidates": [candidate(text, True)], "usageMetadata": metadata,
                                 "modelVersion": model, "responseId": ident})
        pieces = [text[i:i + 4] for i in range(0, len(text), 4)] or [[]]
        events = [{"candidates": [candidate(piece, n == len(pieces) - 1)],
                   # Gemini repeats the usage in every chunk; the last one holds the final counts.
                   "usageMetadata": metadata if n == len(pieces) - 1 else {"promptTokenCount": usage.input},
                   "modelVersion": model, "responseId": ident}
                  for n, piece in enumerate(pieces)]
        if sse:
            chunks = [b"data: " + orjson.dumps(e) + b"\r\n\r\n" for e in events]
            return _Answer(200, b"text/event-stream", chunks, pace=self._pace())
        body = b"[" + b",\r\n".join(orjson.dumps(e) for e in events) + b"]"
        return _Answer(200, b"application/json", [body], pace=self._pace())

    def _error(self, kind: str, status: int, code: str, message: str) -> _Answer:
        provider = PROVIDERS["anthropic" if kind == "anthropic" else "gemini" if kind == "gemini" else "openai"]
        return _Answer(status, b"application/json", [provider.error_body(status, code, message, {})])

    # -- realism ----------------------------------------------------------------------------------

    def _delay(self, low: float, high: float) -> float:
        return self._rng.uniform(low, high) / self._speed

    def _pace(self) -> float:
        return self._rng.uniform(0.004, 0.02) / self._speed

    def _text(self, output_tokens: int) -> list[str]:
        # About one word per token, capped: a stream of a few dozen events reads like a real one.
        return [self._rng.choice(_WORDS) for _ in range(max(1, min(output_tokens, 40)))]

    def _default_usage(self, body: bytes) -> DemoUsage:
        return DemoUsage(input=max(1, len(body) // 4), output=self._rng.randint(20, 400))


def _kind(path: str) -> str:
    if path.endswith("/chat/completions"):
        return "openai_chat"
    if path.endswith("/embeddings"):
        return "embeddings"
    if path.endswith("/messages"):
        return "anthropic"
    if ":generateContent" in path or ":streamGenerateContent" in path:
        return "gemini"
    return "unknown"


def _gemini_model(path: str) -> str | None:
    _, found, rest = path.partition("/models/")
    return rest.split(":", 1)[0] if found else None


def _include_usage(request: Mapping[str, object]) -> bool:
    options = request.get("stream_options")
    return isinstance(options, Mapping) and options.get("include_usage") is True


def _embeddings(model: str, usage: DemoUsage, as_base64: bool) -> dict[str, object]:
    vector = [round(0.1 * (i + 1), 3) for i in range(8)]
    embedding: object = (base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
                         if as_base64 else vector)
    return {"object": "list", "data": [{"object": "embedding", "index": 0, "embedding": embedding}],
            "model": model, "usage": {"prompt_tokens": usage.input, "total_tokens": usage.input}}


def _json_object(body: bytes) -> dict[str, object]:
    try:
        value = orjson.loads(body) if body else {}
    except orjson.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


def _json_answer(data: object, status: int = 200) -> _Answer:
    return _Answer(status, b"application/json", [orjson.dumps(data)])
