"""One access-log line per request (``log.format: json``), written when its row is complete.

What a row says, minus what could be a secret: no key, no provider credential (the row has only
their ids and hashes, and none of those is logged), the request path without credential query
parameters (as stored), and no request or response bodies.
"""

from __future__ import annotations

import logging
from typing import Any

from majordomo_gateway.storage.records import RequestRecord

__all__ = ["ACCESS_LOGGER", "log_access"]

ACCESS_LOGGER = "majordomo.access"
log = logging.getLogger(ACCESS_LOGGER)


def log_access(record: RequestRecord, trace: tuple[str, str] | None = None) -> None:
    fields: dict[str, Any] = {
        "request_id": record.id,
        "method": record.request_method,
        "path": record.request_path,
        "status": record.status_code,
        "provider": record.provider,
        "route": record.route,
        "model": record.model,
        "key_id": record.majordomo_api_key_id,
        "streamed": record.streamed,
        "aborted": record.aborted,
        "duration_ms": record.response_time_ms,
        "time_to_first_token_ms": record.time_to_first_token_ms,
        "usage_source": record.usage_source,
        "input_tokens": record.input_tokens,
        "output_tokens": record.output_tokens,
        "cache_read_tokens": record.cached_tokens,
        "cache_write_tokens": record.cache_creation_tokens,
        "reasoning_tokens": record.reasoning_tokens,
        "cost_usd": float(record.total_cost) if record.total_cost is not None else None,
        "metadata": record.raw_metadata,
    }
    if record.error_message is not None:
        fields["error"] = record.error_message
    if trace is not None:
        fields["trace_id"], fields["span_id"] = trace
    log.info("%s %s %d", record.request_method, record.request_path, record.status_code, extra={"fields": fields})
