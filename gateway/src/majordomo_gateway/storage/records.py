"""The ``llm_requests`` row as the gateway builds it, and its durable (spool) encoding."""

from __future__ import annotations

import operator
from dataclasses import dataclass, field, fields
from datetime import datetime
from decimal import Decimal
from typing import Any

import orjson


@dataclass(slots=True)
class RequestRecord:
    """One proxied request.  Field order is the column order of ``llm_requests``."""

    id: str
    majordomo_api_key_id: str | None
    provider_api_key_hash: str | None
    provider_api_key_alias: str | None
    provider: str
    route: str
    model: str | None
    request_path: str
    request_method: str
    requested_at: datetime
    responded_at: datetime
    response_time_ms: float
    time_to_first_token_ms: float | None = None
    streamed: bool = False
    aborted: bool = False
    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0
    cache_creation_tokens: int = 0
    cache_creation_1h_tokens: int = 0
    reasoning_tokens: int = 0
    web_search_requests: int = 0
    input_cost: Decimal | None = None
    output_cost: Decimal | None = None
    total_cost: Decimal | None = None
    model_alias_found: bool = False
    # "reported": the response carried usage; "missing": it should have but did not (e.g. a stream
    # cut before its usage event); "none": the endpoint reports no usage (model lists, errors).
    usage_source: str = "none"
    status_code: int = 0
    error_message: str | None = None
    raw_metadata: dict[str, str] = field(default_factory=dict)

    def as_tuple(self) -> tuple[Any, ...]:
        # Shallow on purpose: dataclasses.astuple deep-copies (raw_metadata included), which cost
        # ~25 µs per row in the writer's profile.
        return _column_values(self)

    def to_json(self) -> bytes:
        return orjson.dumps(self.as_tuple(), default=_encode_extra)

    @classmethod
    def from_json(cls, data: bytes) -> RequestRecord:
        values = list(orjson.loads(data))
        record = cls(*values)
        record.requested_at = datetime.fromisoformat(values[_REQUESTED_AT])
        record.responded_at = datetime.fromisoformat(values[_RESPONDED_AT])
        for index in _COST_INDEXES:
            if values[index] is not None:
                setattr(record, COLUMNS[index], Decimal(values[index]))
        return record


def _encode_extra(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    raise TypeError(f"cannot encode {type(value).__name__}")


COLUMNS: tuple[str, ...] = tuple(f.name for f in fields(RequestRecord))
_column_values = operator.attrgetter(*COLUMNS)
_REQUESTED_AT = COLUMNS.index("requested_at")
_RESPONDED_AT = COLUMNS.index("responded_at")
_COST_INDEXES = tuple(COLUMNS.index(name) for name in ("input_cost", "output_cost", "total_cost"))


def truncate_message(message: str, limit: int = 2000) -> str:
    """Cut on a character boundary (never inside a UTF-8 sequence) and say that it was cut."""
    if len(message) <= limit:
        return message
    return message[: limit - 1] + "…"
