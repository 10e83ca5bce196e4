"""W3C trace context: reading the caller's ``traceparent``, making ids, writing ours."""

from __future__ import annotations

import random

__all__ = ["TraceParent", "format_traceparent", "new_span_id", "new_trace_id", "parse_traceparent"]

_HEX = frozenset("0123456789abcdef")
TraceParent = tuple[bytes, bytes, int]  # trace id (16 bytes), parent span id (8), trace flags
_ZERO_TRACE = bytes(16)
_ZERO_SPAN = bytes(8)
# The SDK's own id generator draws from ``random`` too: ids need to be unique, not secret.
_bits = random.getrandbits


def parse_traceparent(value: str | None) -> TraceParent | None:
    """``00-<32 hex>-<16 hex>-<2 hex>``; None for anything else (a bad header starts a new trace,
    as the spec says)."""
    if value is None:
        return None
    value = value.strip()
    if len(value) < 55 or value[2] != "-" or value[35] != "-" or value[52] != "-":
        return None
    version = value[:2]
    if version == "ff" or not set(value[:2] + value[3:35] + value[36:52] + value[53:55]) <= _HEX:
        return None
    if version == "00" and len(value) != 55:
        return None
    trace_id, span_id = bytes.fromhex(value[3:35]), bytes.fromhex(value[36:52])
    if trace_id == _ZERO_TRACE or span_id == _ZERO_SPAN:
        return None
    return trace_id, span_id, int(value[53:55], 16)


def new_trace_id() -> bytes:
    return (_bits(128) or 1).to_bytes(16, "big")


def new_span_id() -> bytes:
    return (_bits(64) or 1).to_bytes(8, "big")


def format_traceparent(trace_id: bytes, span_id: bytes, flags: int) -> str:
    return f"00-{trace_id.hex()}-{span_id.hex()}-{flags:02x}"
