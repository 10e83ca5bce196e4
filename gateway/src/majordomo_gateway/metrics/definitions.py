"""Every metric ``/metrics`` serves: name, help text, labels, and how workers' values combine.

docs/observability.md lists them; the Grafana dashboard (deploy/grafana/) queries them, and a
test checks that every expression there names a metric defined here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = ["COUNTERS", "DURATION_BUCKETS", "GAUGES", "HISTOGRAMS", "OVERHEAD_BUCKETS", "TOKEN_TYPES", "Family",
           "all_names"]

#: token type label -> the row's field
TOKEN_TYPES: tuple[tuple[str, str], ...] = (
    ("input", "input_tokens"),
    ("output", "output_tokens"),
    ("cache_read", "cached_tokens"),
    ("cache_write", "cache_creation_tokens"),
    ("reasoning", "reasoning_tokens"),
)

# Seconds.  LLM calls take from tens of ms (a cached embedding) to minutes (a long reasoning stream).
DURATION_BUCKETS: tuple[float, ...] = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
                                       120.0, 300.0)
# The gateway's own time is counted in tenths of a millisecond (docs/performance.md).
OVERHEAD_BUCKETS: tuple[float, ...] = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                       0.1, 0.25, 1.0)


@dataclass(frozen=True, slots=True)
class Family:
    name: str
    help: str
    labels: tuple[str, ...]
    #: whether the X-Majordomo-* metadata labels (metrics.labels) are appended to ``labels``
    metadata: bool = False
    #: gauges: how live workers' values combine ("sum": each worker has its own; "max": all see
    #: the same thing, e.g. the shared spool directory; "min": healthy only if all are)
    merge: Literal["sum", "max", "min"] = "sum"
    buckets: tuple[float, ...] = ()


COUNTERS: dict[str, Family] = {f.name: f for f in (
    Family("majordomo_requests_total", "Requests the gateway answered, by provider, model, route and HTTP status "
           "(status 0: the client left before an answer).", ("provider", "model", "route", "status"), metadata=True),
    Family("majordomo_tokens_total", "Tokens the providers reported, by type (input includes cache reads and "
           "writes; output includes reasoning).", ("provider", "model", "type"), metadata=True),
    Family("majordomo_cost_usd_total", "Cost of the reported usage, in US dollars.", ("provider", "model"),
           metadata=True),
    Family("majordomo_upstream_errors_total", "Upstream failures by kind: unreachable, timeout, broken (the body "
           "stopped short), http_429, http_5xx.", ("provider", "route", "kind")),
    Family("majordomo_writer_rows_written_total", "Rows inserted into the database.", ()),
    Family("majordomo_writer_rows_spooled_total", "Rows written to the spool (the database was down or behind).",
           ()),
    Family("majordomo_writer_rows_replayed_total", "Spooled rows replayed into the database.", ()),
    Family("majordomo_writer_duplicates_total", "Rows the database already had (replays after a crash), "
           "suppressed.", ()),
    Family("majordomo_writer_database_errors_total", "Inserts the database refused (not outages).", ()),
    Family("majordomo_writer_spool_errors_total", "Spool writes that failed.", ()),
    Family("majordomo_writer_rows_dropped_total", "Rows lost: neither the database nor the spool took them.", ()),
    Family("majordomo_writer_rows_rejected_total", "Rows the database refused, set aside in *.rejected files.", ()),
)}

GAUGES: dict[str, Family] = {f.name: f for f in (
    Family("majordomo_writer_queue_depth", "Rows in memory waiting for the database (all workers).", ()),
    Family("majordomo_writer_spool_files", "Files waiting in the spool directory.", (), merge="max"),
    Family("majordomo_writer_spool_bytes", "Bytes waiting in the spool directory.", (), merge="max"),
    Family("majordomo_writer_database_up", "1 while the writers reach the database, 0 while any does not.", (),
           merge="min"),
    Family("majordomo_workers", "Worker processes that published their numbers in the last few seconds.", ()),
    Family("majordomo_budget_spend_usd", "Each budget's spend this period, USD (per value for metadata:<Key>=* "
           "budgets).", ("budget", "scope", "period", "value"), merge="max"),
    Family("majordomo_budget_remaining_usd", "What each budget has left this period, USD.",
           ("budget", "scope", "period", "value"), merge="max"),
    Family("majordomo_budget_limit_usd", "Each budget's limit, USD.", ("budget", "scope", "period", "value"),
           merge="max"),
)}

HISTOGRAMS: dict[str, Family] = {f.name: f for f in (
    Family("majordomo_request_duration_seconds", "Time from the request's arrival to its last byte.",
           ("provider", "model"), buckets=DURATION_BUCKETS),
    Family("majordomo_time_to_first_token_seconds", "Streams: time from the request's arrival to the first "
           "chunk of the answer.", ("provider", "model"), buckets=DURATION_BUCKETS),
    Family("majordomo_gateway_overhead_seconds", "The gateway's own time per request: the whole duration less "
           "the time the upstream took, from sending the request to its last byte.", ("provider",),
           buckets=OVERHEAD_BUCKETS),
)}


def all_names() -> set[str]:
    """Every series name /metrics can show (histograms as their _bucket, _sum and _count)."""
    names = set(COUNTERS) | set(GAUGES)
    for name in HISTOGRAMS:
        names |= {name + "_bucket", name + "_sum", name + "_count"}
    return names
