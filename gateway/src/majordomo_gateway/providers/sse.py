"""Incremental Server-Sent Events framing, plus the few decoding helpers every provider parser uses.

The relay hands us the body in whatever chunks the network produced, so an event can be split
anywhere, including inside the ``\\r\\n\\r\\n`` that ends it.  ``SSEFramer`` only finds event
boundaries and hands back each complete event's raw bytes: providers can then decide with a
cheap substring test whether an event is worth decoding at all, which is what keeps ``feed``
off the JSON parser for the vast majority of events.
"""

from __future__ import annotations

from collections.abc import Mapping

import orjson

from majordomo_gateway.usage import MAX_TOKEN_COUNT, InvalidUsage

__all__ = [
    "Counts",
    "SSEFramer",
    "as_count",
    "error_text",
    "event_name",
    "has_object_value",
    "json_object",
    "parse_event",
]

# 64 MiB: a Responses API `response.completed` event repeats the whole output (generated images
# included, base64), so events can be large, but an unbounded buffer would let one misbehaving
# upstream grow the gateway without limit.
DEFAULT_MAX_EVENT_BYTES = 64 << 20


class SSEFramer:
    """Splits a byte stream into raw SSE event blocks (the bytes between blank lines).

    Each chunk is scanned once.  Only the incomplete last event is kept between calls, as the
    list of pieces that make it up, so a large event arriving in many small chunks is joined once
    rather than once per chunk.  Lines may end in ``\\n`` or ``\\r\\n`` (blocks come back with
    ``\\n`` only); a lone ``\\r`` line ending, allowed by the spec but used by no LLM provider, is
    not recognised.
    """

    __slots__ = ("_cr", "_discarding", "_max", "_nl", "_pending", "_size")

    def __init__(self, max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES) -> None:
        self._pending: list[bytes] = []
        self._size = 0
        # Whether the held data ends in "\n": then a chunk starting with "\n" ends the event.
        self._nl = False
        # Whether the previous chunk ended in "\r", which may be the first half of a "\r\n".
        self._cr = False
        self._max = max_event_bytes
        self._discarding = False

    def feed(self, chunk: bytes) -> list[bytes]:
        """The events completed by ``chunk``, without their terminating blank line."""
        if self._cr or b"\r" in chunk:  # a memchr: nearly free when, as usual, there is none
            chunk = self._fold_crlf(chunk)
        done: list[bytes] = []
        if self._nl and chunk[:1] == b"\n":
            # The blank line straddles the chunk boundary: the held event is complete.
            if not self._discarding:
                done.append(b"".join(self._pending)[:-1])
            self._reset()
            chunk = chunk[1:]
        parts = chunk.split(b"\n\n")
        if len(parts) == 1:
            if chunk:
                self._hold(chunk)
            return done
        pending = self._pending
        if self._discarding:
            # The first part is the end of an event already dropped for being too large.
            parts[0] = b""
            self._discarding = False
        elif pending:
            pending.append(parts[0])
            parts[0] = b"".join(pending)
        pending.clear()
        self._size = 0
        tail = parts.pop()
        self._nl = False
        if tail:
            self._hold(tail)
        limit = self._max
        for block in parts:
            if block[:1] == b"\n":  # from runs of extra blank lines
                block = block.lstrip(b"\n")
            # The limit also applies to events that arrived whole, so chunking never changes results.
            if block and len(block) <= limit:
                done.append(block)
        return done

    def _fold_crlf(self, chunk: bytes) -> bytes:
        """``chunk`` with CRLF line ends as LF, holding back a trailing CR that may start one."""
        if self._cr:
            chunk = b"\r" + chunk
            self._cr = False
        if chunk[-1:] == b"\r":
            chunk = chunk[:-1]
            self._cr = True
        return chunk.replace(b"\r\n", b"\n")

    def close(self) -> bytes | None:
        """What is left at the end of the stream: an event that was never terminated, if any.

        The spec says to drop it; usage parsers look at it anyway, because some servers end the
        body right after the last event's data line.  A truncated event simply fails to decode.
        """
        rest = None if self._discarding else b"".join(self._pending)
        self._reset()
        self._cr = False
        return rest if rest and rest.strip() else None

    def _reset(self) -> None:
        self._pending.clear()
        self._size = 0
        self._nl = False
        self._discarding = False

    def _hold(self, piece: bytes) -> None:
        self._nl = piece[-1:] == b"\n"
        if self._discarding:
            return
        self._size += len(piece)
        if self._size > self._max:
            self._pending.clear()
            self._size = 0
            self._discarding = True
            return
        self._pending.append(piece)


def looks_like_sse(body: bytes) -> bool:
    """A whole response body that is really an event stream (a stream some client buffered)."""
    return body[:64].lstrip().startswith((b"data:", b"event:", b":"))


def parse_event(block: bytes) -> tuple[bytes | None, bytes | None]:
    """``(event name, data)`` of one raw event block; multi-line data is joined with ``\\n``.

    Either is None when the block has no such field (a comment-only block has neither).
    """
    if block.startswith(b"data:") and b"\n" not in block:
        # The overwhelmingly common shape: a single `data:` line (OpenAI, Gemini).
        data = block[5:]
        return None, data[1:] if data[:1] == b" " else data
    event: bytes | None = None
    data_lines: list[bytes] = []
    for line in block.split(b"\n"):
        if not line or line[:1] == b":":
            continue
        name, _, value = line.partition(b":")
        if value[:1] == b" ":
            value = value[1:]
        if name == b"data":
            data_lines.append(value)
        elif name == b"event":
            event = value
    return event, b"\n".join(data_lines) if data_lines else None


def event_name(block: bytes) -> bytes | None:
    """The ``event:`` field of a block, reading no further than needed in the usual layout."""
    if block.startswith(b"event:"):
        end = block.find(b"\n")
        return (block[6:end] if end >= 0 else block[6:]).strip()
    if b"event:" in block:
        return parse_event(block)[0]
    return None


def has_object_value(raw: bytes, key: bytes) -> bool:
    """True when ``raw`` (JSON text) has ``key`` with an object value (``"key": {``), looking
    backwards from the end and stopping at the first occurrence whose value is ``null``.

    ``key`` includes its quotes.  A JSON string cannot contain an unescaped quote, so text that
    merely mentions the key (a model writing about "usage") never matches.  Usage is the last
    top-level field of the events that carry it, so the search runs backwards; a ``null`` there
    (OpenAI's ``"usage":null`` on every chunk but the last) settles it at once, while a string
    value (say, a ``metadata`` entry named "usage" after the real one) does not.
    """
    klen = len(key)
    start = raw.rfind(key)
    while start >= 0:
        end = start + klen
        after = raw[end : end + 2]
        if after == b":{":
            return True
        if after == b":n":
            return False
        after = raw[end : end + 16].lstrip(b" \t\r\n")
        if after[:1] == b":":
            value = after[1:].lstrip(b" \t\r\n")[:1]
            if value == b"{":
                return True
            if value == b"n":
                return False
        start = raw.rfind(key, 0, start)
    return False


def json_object(data: bytes | str | None) -> dict[str, object] | None:
    """``data`` decoded when it is a JSON object; None for anything else, never an exception."""
    if not data:
        return None
    try:
        value = orjson.loads(data)
    except (orjson.JSONDecodeError, TypeError):
        return None
    return value if isinstance(value, dict) else None


def as_count(value: object) -> int | None:
    """A token count from JSON: a whole number from 0 to MAX_TOKEN_COUNT (``12`` or ``12.0``), or
    None for anything else (negative, fractional, too large, a string, a boolean, a list...)."""
    if type(value) is int:  # `type`, not isinstance: True is an int to isinstance
        return value if 0 <= value <= MAX_TOKEN_COUNT else None
    if type(value) is float and 0 <= value <= MAX_TOKEN_COUNT and value.is_integer():
        return int(value)
    return None


class Counts:
    """Reads the counts of one usage report, keeping aside every value that is not a count, so
    that the report can be refused whole (``check``) with what was wrong in it."""

    __slots__ = ("bad",)

    def __init__(self) -> None:
        self.bad: dict[str, object] | None = None

    def get(self, usage: Mapping[str, object], key: str, where: str = "") -> int:
        """``usage[key]`` as a count; 0 when absent or null, and when not a count (then noted)."""
        value = usage.get(key)
        if value is None:
            return 0
        count = as_count(value)
        if count is None:
            if self.bad is None:
                self.bad = {}
            self.bad[where + key] = value
            return 0
        return count

    def check(self) -> None:
        """Raise InvalidUsage if any value read was not a count."""
        if self.bad:
            raise InvalidUsage(self.bad)


_MAX_ERROR_TEXT = 500


def error_text(error: object) -> str:
    """A short human-readable message from a provider's error object.

    OpenAI and Anthropic put a ``type`` next to ``message``; Gemini a ``status`` and a numeric
    ``code``.  The category comes first so that stored errors group well.
    """
    if not isinstance(error, Mapping):
        text = str(error) if error is not None else "unknown error"
        return text[:_MAX_ERROR_TEXT]
    message = error.get("message")
    kind = error.get("type") or error.get("status") or error.get("code")
    text = str(message) if message else "unknown error"
    if kind and str(kind) not in text:
        text = f"{kind}: {text}"
    return text[:_MAX_ERROR_TEXT]
