"""The request-side limits and the spool's record limit agree (issue 18, point 5): the largest row
the proxy.* settings allow, at their ceilings, written with the characters that encode longest,
is still a row the spool writes and replay reads back."""

from __future__ import annotations

import uuid

import orjson
from majordomo_gateway.config import METADATA_CEILINGS, ProxySettings
from majordomo_gateway.proxy.headers import split_headers
from majordomo_gateway.proxy.pipeline import MAX_MODEL_CHARS
from majordomo_gateway.storage.records import truncate_message
from majordomo_gateway.storage.spool import MAX_RECORD_BYTES, spoolable

from tests.support import GatewayProcess
from tests.support.client import MESSAGES, post
from tests.support.records import make_record
from tests.support.upstream import MockUpstream

# The request head the tests assume: well over server.max_head_bytes' default (64 KiB).
HEAD_BYTES = 1024 * 1024


def _largest_row(limits: ProxySettings, head_bytes: int) -> bytes:
    # Bytes that come back longest: \xff is not UTF-8 (U+FFFD, 3 bytes in JSON); " is escaped.
    name_bytes = limits.max_metadata_name_bytes
    headers = []
    room = limits.max_metadata_total_bytes
    for i in range(limits.max_metadata_headers):
        value_bytes = min(limits.max_metadata_value_bytes, room - name_bytes)
        if value_bytes < 2:
            break
        room -= name_bytes + value_bytes
        name = f"{i:04d}".encode() + b"\xff" * (name_bytes - 4)
        headers.append((b"x-majordomo-" + name, b'"\xff' * (value_bytes // 2)))
    headers.append((b"x-majordomo-provider-alias", b"\xff" * limits.max_provider_alias_bytes))
    split = split_headers(headers, limits)
    assert len(split.metadata) == len(headers) - 1
    assert sum(len(n) - 12 + len(v) for n, v in headers[:-1]) > limits.max_metadata_total_bytes * 0.99
    record = make_record(
        "k", raw_metadata=split.metadata, provider_api_key_alias=split.provider_alias,
        model=truncate_message("\x01" * (MAX_MODEL_CHARS * 4), MAX_MODEL_CHARS),  # \u0001: 6 bytes each
        error_message=truncate_message("\x01" * 10_000),
        request_path="/v1/" + "\xff" * head_bytes,  # the path as latin-1 text: 2 bytes each
    )
    payload, reason = spoolable(record)
    assert payload is not None, reason
    print(f"largest row: {len(payload)} bytes")
    return payload


def test_the_largest_row_the_limits_allow_fits_a_spool_record() -> None:
    ceilings = ProxySettings(max_metadata_headers=10_000, max_metadata_value_bytes=1024 * 1024, **METADATA_CEILINGS)
    payload = _largest_row(ceilings, HEAD_BYTES)
    assert len(payload) < MAX_RECORD_BYTES // 2, len(payload)


def test_with_the_defaults_a_row_stays_small() -> None:
    payload = _largest_row(ProxySettings(), 64 * 1024)
    assert len(payload) < 256 * 1024, len(payload)


async def test_the_gateway_answers_400_naming_the_limit(gateway: GatewayProcess, mock_upstream: MockUpstream) -> None:
    """Through a real gateway: metadata over its total, a name too long, an alias too long; nothing
    reaches the upstream.  (Before: a 6.8 MB raw_metadata and a 4 MiB alias were stored.)"""
    probe = uuid.uuid4().hex
    cases = {
        "proxy.max_metadata_total_bytes": {f"X-Majordomo-M{i}": "v" * 1000 for i in range(20)},
        "proxy.max_metadata_name_bytes": {"X-Majordomo-" + "n" * 200: "v"},
        "proxy.max_provider_alias_bytes": {"X-Majordomo-Provider-Alias": "a" * 4096},
    }
    for setting, headers in cases.items():
        response, body = await post(gateway, "/v1/messages", {**MESSAGES, "probe": probe}, headers)
        assert response.status == 400, body
        assert setting in orjson.loads(body)["error"]["message"], body
    assert not [r for r in mock_upstream.requests if probe.encode() in r.body]
