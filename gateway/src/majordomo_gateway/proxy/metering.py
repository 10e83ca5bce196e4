"""Meter and price: what the response said it used, and what that costs, onto the row.

Both run after the client has its last byte, never on the relay's path.
"""

from __future__ import annotations

import logging

from majordomo_gateway.pricing import PriceBook
from majordomo_gateway.providers.base import UsageResult
from majordomo_gateway.proxy.exchange import Exchange
from majordomo_gateway.proxy.routing import Route
from majordomo_gateway.storage.records import COST_LIMIT, RequestRecord, fits_cost_column, truncate_message
from majordomo_gateway.usage import Usage

__all__ = ["apply_body", "apply_result", "meter", "price"]

log = logging.getLogger("majordomo.proxy")


def meter(ex: Exchange) -> None:
    """Usage (or the upstream's error message) from what the relay saw go by."""
    record, route = ex.record, ex.route
    assert record is not None and route is not None
    if ex.parser is not None:
        ex.result = ex.parser.finish()
        apply_result(record, route, ex.result, ex.upstream_path)
    elif ex.captured:
        body = ex.captured[0] if len(ex.captured) == 1 else b"".join(ex.captured)
        ex.result = apply_body(record, route, ex.upstream_path, body, ex.truncated)
    if ex.upstream_broken is not None:
        record.error_message = truncate_message(
            ex.upstream_broken + (f"; {record.error_message}" if record.error_message else ""))


def apply_result(record: RequestRecord, route: Route, result: UsageResult, upstream_path: bytes) -> None:
    """``upstream_path`` is the path the provider answered (a route adapter may have changed the
    client's): whether its answers always carry usage is the provider's to say for that path."""
    if result.model:
        record.model = result.model
    if result.error:
        record.error_message = truncate_message(result.error)
    if result.usage is not None:
        _copy_usage(record, result.usage)
        record.usage_source = "reported"
    elif result.invalid_usage is not None:
        # Never a silent 0 tokens and $0: the row says the report was unusable, and why.
        _invalid(record, result.invalid_usage)
    elif record.status_code < 400 and route.provider.always_reports_usage(upstream_path.decode("latin-1")):
        record.usage_source = "missing"


def apply_body(record: RequestRecord, route: Route, upstream_path: bytes, body: bytes,
               truncated: bool) -> UsageResult | None:
    """A whole (non-streamed) body: usage when the answer is a success, else its error text.
    Returns what the body said, when it was parsed."""
    if record.status_code >= 400:
        record.error_message = truncate_message(body.decode("utf-8", "replace"))
        return None
    if truncated:
        record.usage_source = "missing"
        return None
    path = upstream_path.decode("latin-1")
    result = route.provider.parse_response(path, body)
    apply_result(record, route, result, upstream_path)
    return result


def price(record: RequestRecord, prices: PriceBook) -> None:
    """The cost of reported usage; a row without reported usage has none.  A cost the columns
    cannot hold makes the usage ``invalid``, as a count that is not one does."""
    if record.usage_source != "reported":
        return
    try:
        usage = Usage(record.input_tokens, record.output_tokens, record.cached_tokens,
                      record.cache_creation_tokens, record.cache_creation_1h_tokens,
                      record.reasoning_tokens, record.web_search_requests)
        cost = prices.price(record.provider, record.model, usage, when=record.requested_at)
    except Exception:  # pricing must never cost a row
        log.exception("pricing failed for %s/%s", record.provider, record.model)
        return
    unfit = [value for value in (cost.input_cost, cost.output_cost, cost.total_cost)
             if value is not None and not fits_cost_column(value)]
    if unfit:
        # PostgreSQL would refuse the row and SQLite keep it: neither, on both.
        _copy_usage(record, Usage())
        _invalid(record, f"cost {max(unfit, key=abs)} USD does not fit the cost columns "
                         f"(NUMERIC(20, 10): under {COST_LIMIT} USD); tokens and cost not recorded")
        return
    record.input_cost = cost.input_cost
    record.output_cost = cost.output_cost
    record.total_cost = cost.total_cost
    record.model_alias_found = cost.found


def _invalid(record: RequestRecord, why: str) -> None:
    record.usage_source = "invalid"
    record.error_message = truncate_message(why + (f"; {record.error_message}" if record.error_message else ""))


def _copy_usage(record: RequestRecord, usage: Usage) -> None:
    record.input_tokens = usage.input_tokens
    record.output_tokens = usage.output_tokens
    record.cached_tokens = usage.cached_tokens
    record.cache_creation_tokens = usage.cache_creation_tokens
    record.cache_creation_1h_tokens = usage.cache_creation_1h_tokens
    record.reasoning_tokens = usage.reasoning_tokens
    record.web_search_requests = usage.web_search_requests


