"""OTLP protobuf, written by hand for the gateway's spans.

The OTLP exporters' own encoder builds a protobuf object per attribute in Python: measured at
~98 µs per span (bench/observability_cost.py), twice the budget of a whole traced request.  The
gateway's spans have a fixed shape and mostly repeating attribute values, so the wire format is
written directly here, with the encoded form of repeating key/value pairs cached: ~10 µs per span.
tests/gateway/test_tracing_encode.py decodes the output with opentelemetry-proto.

Field numbers: opentelemetry/proto/trace/v1/trace.proto and common/v1/common.proto.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

__all__ = ["SPAN_KIND_CLIENT", "SpanRecord", "encode_key_values", "encode_scope", "encode_traces"]

SPAN_KIND_CLIENT = 3
STATUS_ERROR = 2
_FIXED64 = struct.Struct("<Q").pack
_DOUBLE = struct.Struct("<d").pack
_FIXED32 = struct.Struct("<I").pack
_SMALL = [bytes((n,)) for n in range(128)]
# SPAN_FLAGS_CONTEXT_HAS_IS_REMOTE_MASK and SPAN_FLAGS_CONTEXT_IS_REMOTE_MASK (trace.proto)
_HAS_IS_REMOTE = 0x100
_IS_REMOTE = 0x200


def _varint(n: int) -> bytes:
    if n < 0x80:
        return _SMALL[n] if n >= 0 else _varint(n + (1 << 64))
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _len(tag: bytes, data: bytes) -> bytes:
    return tag + _varint(len(data)) + data


def _any_value(value: Any) -> bytes:
    """AnyValue: string 1, bool 2, int 3, double 4, array 5."""
    if isinstance(value, str):
        return _len(b"\x0a", value.encode("utf-8", "replace"))
    if isinstance(value, bool):
        return b"\x10\x01" if value else b"\x10\x00"
    if isinstance(value, int):
        return b"\x18" + _varint(value)
    if isinstance(value, float):
        return b"\x21" + _DOUBLE(value)
    if isinstance(value, list | tuple):
        return _len(b"\x2a", b"".join(_len(b"\x0a", _any_value(v)) for v in value))
    return _len(b"\x0a", str(value).encode("utf-8", "replace"))


_KEYS: dict[str, bytes] = {}
# (key, value) -> the whole encoded KeyValue, for values that repeat (names, models, flags, small
# counts); bounded, never evicting: values beyond it are encoded every time.
_PAIRS: dict[tuple[Any, ...], bytes] = {}
_PAIRS_MAX = 8192


def _encode_pair(key: str, value: Any) -> bytes:
    """KeyValue {key 1, value 2}, length-prefixed (the caller adds the field's tag)."""
    prefix = _KEYS.get(key)
    if prefix is None:
        prefix = _KEYS[key] = _len(b"\x0a", key.encode("utf-8", "replace"))
    encoded = prefix + _len(b"\x12", _any_value(value))
    return _varint(len(encoded)) + encoded


def encode_key_values(tag: bytes, attributes: Iterable[tuple[str, Any]]) -> bytes:
    parts: list[bytes] = []
    pairs = _PAIRS
    for key, value in attributes:
        kind = type(value)
        # Strings that repeat (names, models, routes), flags and small counts: encoded once.
        if (kind is str and len(value) <= 64) or kind is bool or (kind is int and 0 <= value < 1024):
            # True == 1 to a dict: the type is part of the key for all but strings.
            pair = (key, value) if kind is str else (key, value, kind)
            done = pairs.get(pair)
            if done is None:
                done = _encode_pair(key, value)
                if len(pairs) < _PAIRS_MAX:
                    pairs[pair] = done
            parts += (tag, done)
        elif value is not None:
            parts += (tag, _encode_pair(key, value))
    return b"".join(parts)


def encode_scope(name: str, version: str | None) -> bytes:
    """InstrumentationScope {name 1, version 2}."""
    body = _len(b"\x0a", name.encode())
    if version:
        body += _len(b"\x12", version.encode())
    return body


class SpanRecord:
    """One finished span, as the request path leaves it for the export thread."""

    __slots__ = ("attributes", "end_ns", "error", "event", "flags", "kind", "name", "parent_id", "remote_parent",
                 "span_id", "start_ns", "status_message", "trace_id", "trace_state")

    def __init__(self, trace_id: bytes, span_id: bytes, parent_id: bytes, flags: int, name: str, start_ns: int,
                 end_ns: int, attributes: list[tuple[str, Any]], *, trace_state: str | None = None,
                 event: tuple[str, int] | None = None, error: bool = False, status_message: str | None = None,
                 remote_parent: bool = False, kind: int = SPAN_KIND_CLIENT) -> None:
        self.trace_id = trace_id
        self.span_id = span_id
        self.parent_id = parent_id
        self.flags = flags
        self.name = name
        self.start_ns = start_ns
        self.end_ns = end_ns
        self.attributes = attributes
        self.trace_state = trace_state
        self.event = event
        self.error = error
        self.status_message = status_message
        self.remote_parent = remote_parent
        self.kind = kind


def _span(span: SpanRecord) -> bytes:
    parts = [b"\x0a\x10", span.trace_id, b"\x12\x08", span.span_id]
    if span.trace_state:
        parts.append(_len(b"\x1a", span.trace_state.encode()))
    if span.parent_id:
        parts += (b"\x22\x08", span.parent_id)
    parts += (_len(b"\x2a", span.name.encode("utf-8", "replace")), b"\x30", _SMALL[span.kind],
              b"\x39", _FIXED64(span.start_ns), b"\x41", _FIXED64(span.end_ns))
    parts.append(encode_key_values(b"\x4a", span.attributes))
    if span.event is not None:
        name, at = span.event
        parts.append(_len(b"\x5a", b"\x09" + _FIXED64(at) + _len(b"\x12", name.encode())))
    if span.error:
        message = _len(b"\x12", span.status_message.encode("utf-8", "replace")) if span.status_message else b""
        parts.append(_len(b"\x7a", message + b"\x18" + _SMALL[STATUS_ERROR]))
    flags = (span.flags & 0xFF) | _HAS_IS_REMOTE | (_IS_REMOTE if span.remote_parent else 0)
    parts += (b"\x85\x01", _FIXED32(flags))
    return b"".join(parts)


def encode_traces(resource_attributes: Mapping[str, Any], scope: bytes, spans: Sequence[SpanRecord],
                  schema_url: str = "") -> bytes:
    """ExportTraceServiceRequest {resource_spans 1: ResourceSpans {resource 1, scope_spans 2}}."""
    resource = encode_key_values(b"\x0a", resource_attributes.items())
    scope_spans = _len(b"\x0a", scope) + b"".join(_len(b"\x12", _span(span)) for span in spans)
    resource_spans = _len(b"\x0a", resource) + _len(b"\x12", scope_spans)
    if schema_url:
        resource_spans += _len(b"\x1a", schema_url.encode())
    return _len(b"\x0a", resource_spans)
