"""``RequestRecord`` rows as the writer and the spool carry them, for the storage and spool tests."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import uuid_utils
from majordomo_gateway.storage.records import RequestRecord

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


def make_record(key_id: str | None, *, at: datetime = NOW, **changes: object) -> RequestRecord:
    """A priced Anthropic row at ``at``; ``changes`` overrides any field."""
    record = RequestRecord(
        id=str(uuid_utils.uuid7()), majordomo_api_key_id=key_id, provider_api_key_hash="h" * 64,
        provider_api_key_alias=None, provider="anthropic", route="anthropic", model="claude-sonnet-4-20250514",
        request_path="/v1/messages", request_method="POST", requested_at=at,
        responded_at=at + timedelta(milliseconds=250), response_time_ms=250.0, input_tokens=1000,
        output_tokens=50, cached_tokens=200, input_cost=Decimal("0.0025350000"),
        output_cost=Decimal("0.00075"), total_cost=Decimal("0.0032850000"), model_alias_found=True,
        usage_source="reported", status_code=200, raw_metadata={"Feature": "chat", "User-Id": "u1"},
    )
    for name, value in changes.items():
        setattr(record, name, value)
    return record


def spool_record(key_id: str, seq: str) -> RequestRecord:
    """A small OpenAI row five minutes old, told apart by ``raw_metadata["Seq"]``."""
    now = datetime.now(UTC) - timedelta(minutes=5)
    return RequestRecord(
        id=str(uuid_utils.uuid7()), majordomo_api_key_id=key_id, provider_api_key_hash="h" * 64,
        provider_api_key_alias=None, provider="openai", route="openai", model="gpt-4o",
        request_path="/v1/chat/completions", request_method="POST", requested_at=now,
        responded_at=now + timedelta(milliseconds=20), response_time_ms=20.0, input_tokens=100, output_tokens=20,
        input_cost=Decimal("0.00025"), output_cost=Decimal("0.0002"), total_cost=Decimal("0.00045"),
        model_alias_found=True, usage_source="reported", status_code=200, raw_metadata={"Seq": seq},
    )
