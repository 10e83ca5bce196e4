"""What crosses the gateway: headers forwarded, headers kept for ourselves, metadata extracted."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Protocol

# RFC 9110 §7.6.1 connection-specific headers, plus those the HTTP client sets from the body/URL.
HOP_BY_HOP = frozenset({
    b"connection", b"keep-alive", b"proxy-authenticate", b"proxy-authorization", b"proxy-connection",
    b"te", b"trailer", b"transfer-encoding", b"upgrade",
})
# expect: the gateway has read the whole body already; the upstream gets it in one go.
_NOT_FORWARDED = HOP_BY_HOP | {b"host", b"content-length", b"expect"}
_RESPONSE_DROPPED = HOP_BY_HOP
_REQUEST_ID = b"x-majordomo-request-id"
MAJORDOMO_PREFIX = b"x-majordomo-"
KEY_HEADER = "key"
PROVIDER_HEADER = "provider"
ALIAS_HEADER = "provider-alias"
_RESERVED = {KEY_HEADER, PROVIDER_HEADER, ALIAS_HEADER}
# Codings the gateway can undo to read usage; others are not offered to the upstream.
_DECODABLE_CODINGS = {"gzip", "deflate", "identity", "x-gzip"}


class MetadataError(ValueError):
    pass


@dataclass(slots=True)
class ClientHeaders:
    """The client's headers, split into what goes upstream and what is for Majordomo."""

    forward: list[tuple[str, str]] = field(default_factory=list)
    lowered: dict[str, str] = field(default_factory=dict)
    majordomo_key: str | None = None
    provider: str | None = None
    provider_alias: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)


def canonical_name(name: str) -> str:
    """``user-id`` → ``User-Id``: the casing the guide's SQL queries use."""
    canonical = _CANONICAL.get(name)
    if canonical is None:
        canonical = "-".join(part[:1].upper() + part[1:].lower() for part in name.split("-"))
        if len(_CANONICAL) < _CANONICAL_MAX:  # clients choose the names: bounded, never evicting
            _CANONICAL[name] = canonical
    return canonical


# The same few metadata names (Feature, Step, User-Id...) arrive on every request.
_CANONICAL: dict[str, str] = {}
_CANONICAL_MAX = 4096


class HeaderLimits(Protocol):
    """What one request's X-Majordomo-* headers may hold: ``ProxySettings`` (the ``proxy.*``
    settings of these names).  Together they bound a row; tests/gateway/test_row_limits.py checks
    that the largest row they allow fits a spool record (storage/spool.py, MAX_RECORD_BYTES)."""

    @property
    def max_metadata_headers(self) -> int: ...
    @property
    def max_metadata_value_bytes(self) -> int: ...
    @property
    def max_metadata_name_bytes(self) -> int: ...
    @property
    def max_metadata_total_bytes(self) -> int: ...
    @property
    def max_provider_alias_bytes(self) -> int: ...


def split_headers(raw: list[tuple[bytes, bytes]], limits: HeaderLimits) -> ClientHeaders:
    result = ClientHeaders()
    connection_tokens = _connection_tokens(raw)
    metadata_bytes = 0
    for name, value in raw:
        if name.startswith(MAJORDOMO_PREFIX):
            metadata_bytes += _take_majordomo(result, name[len(MAJORDOMO_PREFIX):], value, limits, metadata_bytes)
            continue
        if name in _NOT_FORWARDED or name in connection_tokens:
            continue
        if b"_" in name and _looks_majordomo(name):
            continue
        text_name = name.decode("latin-1")
        text_value = value.decode("latin-1")
        if name == b"accept-encoding":
            text_value = _decodable_only(text_value)
            if not text_value:
                continue
        result.forward.append((text_name, text_value))
        result.lowered[text_name] = text_value
    return result


def _connection_tokens(raw: list[tuple[bytes, bytes]]) -> set[bytes]:
    tokens: set[bytes] = set()
    for name, value in raw:
        if name == b"connection":
            tokens.update(t.strip().lower() for t in value.split(b","))
    return tokens


def _looks_majordomo(name: bytes) -> bool:
    """``X_Majordomo_Key``, ``x-majordomo_feature``: servers that fold ``_`` into ``-`` would read them
    as ours. They are neither forwarded (an upstream must never see a Majordomo key) nor taken as ours
    (the spelled-out name is the only one clients are told to use)."""
    return name.replace(b"_", b"-").startswith(MAJORDOMO_PREFIX)


def _take_majordomo(result: ClientHeaders, raw_suffix: bytes, value: bytes, limits: HeaderLimits,
                    metadata_bytes: int) -> int:
    """Take one X-Majordomo-* header; returns the bytes it adds to the metadata."""
    suffix = raw_suffix.decode("latin-1")
    if suffix == KEY_HEADER:
        result.majordomo_key = value.decode("utf-8", "replace").strip()
        return 0
    if suffix == PROVIDER_HEADER:
        result.provider = value.decode("utf-8", "replace")
        return 0
    if suffix == ALIAS_HEADER:
        if len(value) > limits.max_provider_alias_bytes:
            raise MetadataError(f"header X-Majordomo-Provider-Alias is {len(value)} bytes; the limit is "
                                f"{limits.max_provider_alias_bytes} (proxy.max_provider_alias_bytes)")
        result.provider_alias = value.decode("utf-8", "replace")
        return 0
    if not suffix:
        return 0
    if len(raw_suffix) > limits.max_metadata_name_bytes:
        # Checked before the name is canonicalised (and cached) or shown whole.
        raise MetadataError(f"metadata header name X-Majordomo-{suffix[:40]}... is {len(raw_suffix)} bytes after "
                            f"X-Majordomo-; the limit is {limits.max_metadata_name_bytes} "
                            "(proxy.max_metadata_name_bytes)")
    name = canonical_name(suffix)
    if len(value) > limits.max_metadata_value_bytes:
        raise MetadataError(f"header X-Majordomo-{name} is {len(value)} bytes; "
                            f"the limit is {limits.max_metadata_value_bytes} (proxy.max_metadata_value_bytes)")
    added = len(raw_suffix) + len(value)
    if metadata_bytes + added > limits.max_metadata_total_bytes:
        raise MetadataError(f"X-Majordomo-* metadata totals more than {limits.max_metadata_total_bytes} bytes "
                            "(names after X-Majordomo- and values); the limit is "
                            f"{limits.max_metadata_total_bytes} (proxy.max_metadata_total_bytes)")
    result.metadata[name] = value.decode("utf-8", "replace")
    if len(result.metadata) > limits.max_metadata_headers:
        raise MetadataError(f"more than {limits.max_metadata_headers} X-Majordomo-* metadata headers; the limit is "
                            f"{limits.max_metadata_headers} (proxy.max_metadata_headers)")
    return added


def _decodable_only(value: str) -> str:
    kept = [part for part in value.split(",") if part.split(";")[0].strip().lower() in _DECODABLE_CODINGS]
    return ",".join(kept).strip()


def response_headers(raw: Iterable[tuple[bytes, bytes]], request_id: bytes) -> list[tuple[bytes, bytes]]:
    # The request id is the gateway's alone: an upstream's copy would give the client two.
    headers = [(lower, value) for name, value in raw
               if (lower := name.lower()) not in _RESPONSE_DROPPED and lower != _REQUEST_ID]
    headers.append((_REQUEST_ID, request_id))
    return headers
