"""Google Gemini's native API (``generativelanguage.googleapis.com``): generateContent and
streamGenerateContent.

Gemini's OpenAI-compatible endpoint speaks OpenAI's wire format: providers/openai.py reads it; its
base URL is ``GEMINI_OPENAI_BASE_URL`` below (the built-in provider ``gemini_openai``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import ClassVar
from urllib.parse import quote, unquote

import orjson

from majordomo_gateway.providers.base import RequestInfo, StreamUsageParser, UsageResult, swap_headers
from majordomo_gateway.providers.sse import Counts, SSEFramer, error_text, json_object, parse_event
from majordomo_gateway.usage import InvalidUsage, Usage

__all__ = ["GeminiProvider", "model_from_path", "usage_from_gemini"]

_USAGE_FIELD = "usageMetadata"
_USAGE_KEY = b'"usageMetadata"'
_FINISH_KEY = b'"finishReason"'
_ERROR_EVENTS = (b'data: {"error"', b'data:{"error"', b'data: { "error"')
_ARRAY_END = b"\n]"

# `models/{model}:{method}`, also under `tunedModels/` and Vertex-style
# `projects/.../publishers/google/models/`.  Model ids never contain "/" or ":".
_MODEL_IN_PATH = re.compile(r"(?:^|/)(models|tunedModels)/([^/:?]+)")
_NATIVE_CALL = re.compile(r"^/v1(?:alpha|beta)?\d*/(?:models|tunedModels)/[^/:]+:[A-Za-z]+$")

# Methods whose response does not report tokens that were billed.
_UNBILLED_METHODS = (":countTokens", ":countMessageTokens", ":countTextTokens")
# Their successful answers always carry usageMetadata; embeddings and model listings do not.
_GENERATE_METHODS = (":generateContent", ":streamGenerateContent")


#: Gemini's OpenAI-compatible API (registered as the built-in provider gemini_openai).
GEMINI_OPENAI_BASE_URL = "https://generativelanguage.googleapis.com/v1beta/openai"


def _bare_path(path: str) -> str:
    path = path.partition("?")[0]
    # A client may percent-encode the ":" of `model:method`.
    return unquote(path) if "%" in path else path


def model_from_path(path: str) -> str | None:
    """``.../models/gemini-2.0-flash:generateContent`` → ``gemini-2.0-flash``.

    A tuned model keeps its collection (``tunedModels/my-model``): it is not the base model of
    the same name and must not be priced as one.
    """
    match = _MODEL_IN_PATH.search(_bare_path(path))
    if match is None:
        return None
    collection, model = match.groups()
    return model if collection == "models" else f"{collection}/{model}"


def usage_from_gemini(meta: Mapping[str, object]) -> Usage:
    """Our Usage from Gemini's ``usageMetadata``.

    ``promptTokenCount`` already includes ``cachedContentTokenCount``; tool-use prompt tokens
    (e.g. search results fed back to the model) are billed as input on top of it, and thinking
    tokens are billed as output on top of ``candidatesTokenCount``.  Raises InvalidUsage when a
    count is not a count (sse.as_count).
    """
    count = Counts()
    thoughts = count.get(meta, "thoughtsTokenCount")
    usage = Usage(
        input_tokens=count.get(meta, "promptTokenCount") + count.get(meta, "toolUsePromptTokenCount"),
        output_tokens=count.get(meta, "candidatesTokenCount") + thoughts,
        cached_tokens=count.get(meta, "cachedContentTokenCount"),
        reasoning_tokens=thoughts,
    )
    count.check()
    return usage


def _model_version(obj: Mapping[str, object]) -> str | None:
    version = obj.get("modelVersion")
    if isinstance(version, str) and version:
        return version.removeprefix("models/")
    return None


def _result_from_objects(
    objects: list[dict[str, object]], fallback_model: str | None, *, count_usage: bool
) -> UsageResult:
    """UsageResult from response objects in stream order (one for generateContent)."""
    result = UsageResult()
    for obj in reversed(objects):
        meta = obj.get(_USAGE_FIELD)
        if isinstance(meta, Mapping):
            # Stream chunks carry cumulative counts: the last report is the total.
            if count_usage:
                try:
                    result.usage = usage_from_gemini(meta)
                except InvalidUsage as exc:
                    result.invalid_usage = str(exc)
            result.model = _model_version(obj)
            break
    if result.model is None:
        result.model = next(
            (m for m in map(_model_version, reversed(objects)) if m is not None), fallback_model
        )
    _describe(result, objects)
    if objects and objects[-1].get("error"):
        # An error ends the stream, so only the last object can be one.
        result.error = error_text(objects[-1]["error"])
    return result


def _describe(result: UsageResult, objects: list[dict[str, object]]) -> None:
    """responseId (every chunk has it) and the last chunk's candidates' finishReason."""
    for obj in reversed(objects):
        answer_id = obj.get("responseId")
        if isinstance(answer_id, str) and result.response_id is None:
            result.response_id = answer_id
        candidates = obj.get("candidates")
        if isinstance(candidates, list) and not result.finish_reasons:
            result.finish_reasons = [c["finishReason"] for c in candidates
                                     if isinstance(c, Mapping) and isinstance(c.get("finishReason"), str)]


def _decode_elements(piece: bytes) -> list[dict[str, object]]:
    """The objects in a stretch of a streamed JSON array: one element, several, or the whole
    array, with or without its brackets and separating commas.  Bad JSON gives []."""
    text = piece.strip().lstrip(b"[,").rstrip(b"]").strip()
    if not text:
        return []
    try:
        value = orjson.loads(b"[" + text + b"]")
    except orjson.JSONDecodeError:
        return []
    return [v for v in value if isinstance(v, dict)]


# A comma between two top-level elements of a pretty-printed array starts its line (Google:
# `}\n,\r\n{`) or follows a `}` that starts its line (`},\r\n{`): only a top-level element closes
# at column 0, nested ones are indented.  A raw newline cannot occur inside a JSON string, so
# neither pattern can match inside text.
_SEPARATOR = b"\n,"
_SEPARATOR_AFTER_BRACE = b"\n},"


def _has_separator(data: bytes) -> bool:
    return _SEPARATOR in data or _SEPARATOR_AFTER_BRACE in data


class _ArrayElements:
    """Splits a streamed, pretty-printed JSON array into its elements without parsing it.

    Only the element being received is held.  An array written without newlines has no
    recognisable separator, so it is held whole and handed back by ``close`` to be decoded at once.
    """

    __slots__ = ("_last2", "_pending")

    def __init__(self) -> None:
        self._pending: list[bytes] = []
        self._last2 = b""  # a separator can straddle two chunks

    def feed(self, chunk: bytes) -> list[bytes]:
        pending = self._pending
        pending.append(chunk)
        if not _has_separator(chunk) and not _has_separator(self._last2 + chunk[:2]):
            self._last2 = (self._last2 + chunk[-2:])[-2:]
            return []
        data = b"".join(pending)
        pending.clear()
        if _SEPARATOR_AFTER_BRACE in data:
            data = data.replace(_SEPARATOR_AFTER_BRACE, b"\n}\n,")
        elements = data.split(_SEPARATOR)
        tail = elements.pop()
        if tail:
            pending.append(tail)
        self._last2 = tail[-2:]
        return elements

    def close(self) -> bytes | None:
        rest = b"".join(self._pending)
        self._pending.clear()
        return rest or None


class _GeminiStreamParser:
    """Keeps the last element or event that mentions ``usageMetadata``, and the very last one
    (where an error would be), and decodes only those in ``finish``.

    With ``?alt=sse`` the body is server-sent events; without, one JSON array written
    incrementally, which ``_ArrayElements`` splits.  The first byte tells which.
    """

    __slots__ = (
        "_count_usage",
        "_last",
        "_mode",
        "_nl",
        "_request_model",
        "_splitter",
        "_usage",
        "_usage_before",
        "ended",
    )

    def __init__(self, request: RequestInfo, count_usage: bool) -> None:
        self.ended = False
        self._nl = False  # JSON mode: the previous chunk ended in a newline
        self._mode = b""  # b"sse" or b"json" once the first byte says which
        self._splitter: SSEFramer | _ArrayElements | None = None
        self._usage: bytes | None = None
        self._usage_before: bytes | None = None
        self._last: bytes | None = None
        self._request_model = request.model
        self._count_usage = count_usage

    def feed(self, chunk: bytes) -> None:
        splitter = self._splitter
        if splitter is None:
            head = chunk.lstrip()
            if not head:
                return  # whitespace before the body proper matters to neither format
            if head[:1] in (b"[", b"{"):
                self._mode = b"json"
                splitter = self._splitter = _ArrayElements()
            else:
                self._mode = b"sse"
                splitter = self._splitter = SSEFramer()
        for piece in splitter.feed(chunk):
            self._see(piece)
        if self._mode == b"json" and not self.ended:
            # The array's closing bracket, at the start of a line as only the top level's is,
            # is its end: the elements before it are complete then, the last one included.
            if _ARRAY_END in chunk or (self._nl and chunk[:1] == b"]"):
                self.ended = True
            self._nl = chunk[-1:] == b"\n"

    def _see(self, piece: bytes) -> None:
        if self._mode == b"sse" and (_FINISH_KEY in piece or piece.startswith(_ERROR_EVENTS)):
            # The chunk that says why the answer ended is the last (or an error, which ends it).
            self.ended = True
        # Searched from the end, where Gemini puts usageMetadata.
        if piece.rfind(_USAGE_KEY) >= 0:
            # The one before is kept too: if the stream is cut inside the last report, the
            # previous one is the best count there is.
            self._usage_before = self._usage
            self._usage = piece
        self._last = piece

    def _decode(self, piece: bytes | None) -> list[dict[str, object]]:
        if piece is None:
            return []
        if self._mode == b"sse":
            obj = json_object(parse_event(piece)[1])
            return [obj] if obj is not None else []
        return _decode_elements(piece)

    def finish(self) -> UsageResult:
        rest = self._splitter.close() if self._splitter is not None else None
        if rest is not None:
            self._see(rest)
        objects = self._decode(self._last)
        if not any(_USAGE_FIELD in obj for obj in objects):
            for piece in (self._usage, self._usage_before):
                if piece is not None and piece is not self._last:
                    found = self._decode(piece)
                    if any(_USAGE_FIELD in obj for obj in found):
                        objects = found + objects
                        break
        return _result_from_objects(objects, self._request_model, count_usage=self._count_usage)


# google.rpc.Code names by HTTP status, as Google APIs put them in error.status.
_ERROR_STATUS = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 404: "NOT_FOUND",
                 413: "INVALID_ARGUMENT", 429: "RESOURCE_EXHAUSTED", 500: "INTERNAL", 502: "UNAVAILABLE",
                 503: "UNAVAILABLE", 504: "DEADLINE_EXCEEDED"}


class GeminiProvider:
    """The Gemini API's native surface."""

    kind: ClassVar[str] = "gemini"
    default_base_url: ClassVar[str] = "https://generativelanguage.googleapis.com"
    pricing_id: ClassVar[str] = "google"

    __slots__ = ("name",)

    def __init__(self, name: str = "gemini", *, api_root: bool = False) -> None:
        # google-genai takes the origin as base URL and sends /v1beta/models/...: nothing to strip.
        self.name = name

    def __repr__(self) -> str:
        return f"GeminiProvider(name={self.name!r})"

    def upstream_path(self, raw_path: bytes) -> bytes:
        return raw_path

    def bills(self, path: str) -> bool:
        return not _bare_path(path).endswith(_UNBILLED_METHODS)

    def always_reports_usage(self, path: str) -> bool:
        return _bare_path(path).endswith(_GENERATE_METHODS)

    def handles_path(self, path: str) -> bool:
        p = _bare_path(path)
        if p.startswith(("/v1beta/", "/v1alpha/")):
            # Only Gemini uses these prefixes, except its OpenAI-compatible surface.
            return not p.startswith(("/v1beta/openai/", "/v1alpha/openai/"))
        # Under plain /v1 only `model:method` calls are Gemini's (/v1/models is OpenAI's).
        return _NATIVE_CALL.match(p) is not None

    def credential(self, headers: Mapping[str, str], query: Mapping[str, str]) -> str | None:
        return headers.get("x-goog-api-key") or query.get("key") or None

    def with_credential(self, headers: Sequence[tuple[str, str]], query: bytes,
                        secret: str) -> tuple[list[tuple[str, str]], bytes]:
        # google-genai sends x-goog-api-key; REST examples and older clients put ?key= in the URL.
        if query:
            value = b"key=" + quote(secret, safe="").encode("ascii")
            query = b"&".join(value if part.startswith(b"key=") else part for part in query.split(b"&"))
        return swap_headers(headers, {"x-goog-api-key": secret}), query

    def error_body(self, status: int, code: str, message: str, extra: Mapping[str, object]) -> bytes:
        # Google's error model: a numeric code, a status name, and the reason in an ErrorInfo detail
        # (where google-genai and Google's other clients look for a machine-readable cause).
        info: dict[str, object] = {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": code,
                                   "domain": "majordomo"}
        if extra:
            info["metadata"] = {key: str(value) for key, value in extra.items()}
        return orjson.dumps({"error": {"code": status, "message": message,
                                       "status": _ERROR_STATUS.get(status, "INTERNAL"), "details": [info]}})

    def request_info(self, path: str, body: bytes) -> RequestInfo:
        # The model and the streaming flag are both in the path: the body need not be parsed.
        return RequestInfo(model=model_from_path(path), stream=":streamGenerateContent" in _bare_path(path))

    def parse_response(self, path: str, body: bytes) -> UsageResult:
        count_usage = self.bills(path)
        head = body[:64].lstrip()
        if head.startswith((b"data:", b"event:", b":")) or head[:1] == b"[":
            # A buffered stream (SSE or JSON array): read it as one.
            parser = _GeminiStreamParser(RequestInfo(model=model_from_path(path)), count_usage)
            parser.feed(body)
            return parser.finish()
        obj = json_object(body)
        objects = [obj] if obj is not None else []
        return _result_from_objects(objects, model_from_path(path), count_usage=count_usage)

    def stream_parser(self, path: str, request: RequestInfo) -> StreamUsageParser:
        count_usage = self.bills(path)
        return _GeminiStreamParser(request, count_usage)
