"""One worker's numbers: plain dicts of counters and histogram buckets, updated as rows complete.

``observe`` runs once per request, on the event loop, after the client has its last byte; it is a
handful of dict updates (docs/performance.md has its cost).  ``snapshot`` turns everything into
the JSON-able form workers publish (metrics/shared.py).
"""

from __future__ import annotations

import os
import time
from bisect import bisect_left
from collections.abc import Callable, Iterable
from typing import Any

from majordomo_gateway.metrics.definitions import GAUGES, HISTOGRAMS, Family
from majordomo_gateway.metrics.labels import OVERFLOW, MetadataLabels
from majordomo_gateway.proxy.routing import Route
from majordomo_gateway.storage.records import RequestRecord
from majordomo_gateway.storage.writer.stats import WriterStats

__all__ = ["MAX_MODELS", "GaugeSource", "Histogram", "ProcessMetrics", "Snapshot"]

#: Distinct model names one worker labels series with; later ones are counted as ``other``
#: (clients choose the model string).
MAX_MODELS = 500

Snapshot = dict[str, Any]
Labels = tuple[str, ...]
#: Extra gauges (budgets, when they exist): called at each publish, returns each family with its
#: samples.
GaugeSource = Callable[[], Iterable[tuple[Family, list[tuple[Labels, float]]]]]


class Histogram:
    """Bucket counts per label set: ``[count in bucket 0, ..., count above the last bound, sum]``.
    Buckets are not cumulative here; the exposition adds them up."""

    __slots__ = ("bounds", "series")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.series: dict[Labels, list[float]] = {}

    def observe(self, key: Labels, value: float) -> None:
        counts = self.series.get(key)
        if counts is None:
            counts = self.series[key] = [0] * (len(self.bounds) + 2)
        counts[bisect_left(self.bounds, value)] += 1
        counts[-1] += value


class ProcessMetrics:
    def __init__(self, labels: MetadataLabels | None = None) -> None:
        self.labels = labels
        self.requests: dict[Labels, int] = {}
        self.tokens: dict[Labels, int] = {}
        self.cost: dict[Labels, float] = {}
        self.upstream_errors: dict[Labels, int] = {}
        self.duration = Histogram(HISTOGRAMS["majordomo_request_duration_seconds"].buckets)
        self.ttft = Histogram(HISTOGRAMS["majordomo_time_to_first_token_seconds"].buckets)
        self.overhead = Histogram(HISTOGRAMS["majordomo_gateway_overhead_seconds"].buckets)
        self.writer: Callable[[], WriterStats] | None = None
        self.gauge_sources: list[GaugeSource] = []
        self._models: set[str] = set()
        self._status: dict[int, str] = {}

    def add_gauges(self, source: GaugeSource) -> None:
        """A hook for numbers that live elsewhere (budget spend and remaining): read at each publish."""
        self.gauge_sources.append(source)

    # -- per request ----------------------------------------------------------------------
    def observe(self, record: RequestRecord, upstream_seconds: float, upstream_error: str | None) -> None:
        """A finished row.  ``upstream_seconds``: from sending the request upstream to its last
        byte (0 when it never went); ``upstream_error``: the kind of upstream failure, if any."""
        provider = record.provider
        model = record.model or ""
        if model not in self._models:
            if len(self._models) >= MAX_MODELS:
                model = OVERFLOW
            else:
                self._models.add(model)
        meta = self.labels.values(record.raw_metadata) if self.labels is not None else ()
        status = self._status.get(record.status_code)
        if status is None:
            status = self._status.setdefault(record.status_code, str(record.status_code))
        key: Labels = (provider, model, record.route, status, *meta)
        requests = self.requests
        requests[key] = requests.get(key, 0) + 1
        if record.usage_source == "reported":
            tokens = self.tokens
            for kind, count in (("input", record.input_tokens), ("output", record.output_tokens),
                                ("cache_read", record.cached_tokens), ("cache_write", record.cache_creation_tokens),
                                ("reasoning", record.reasoning_tokens)):
                if count:
                    key = (provider, model, kind, *meta)
                    tokens[key] = tokens.get(key, 0) + count
            if record.total_cost is not None:
                key = (provider, model, *meta)
                self.cost[key] = self.cost.get(key, 0.0) + float(record.total_cost)
        seconds = record.response_time_ms / 1000
        pair = (provider, model)
        self.duration.observe(pair, seconds)
        if record.time_to_first_token_ms is not None:
            self.ttft.observe(pair, record.time_to_first_token_ms / 1000)
        self.overhead.observe((provider,), max(0.0, seconds - upstream_seconds))
        if upstream_error is not None:
            key = (provider, record.route, upstream_error)
            self.upstream_errors[key] = self.upstream_errors.get(key, 0) + 1

    def unrecorded(self, status: int, route: Route | None) -> None:
        """An answer without a row (no key, a bad key, an unknown path): counted, unlabelled but
        for its status and, when known, the route whose error shape it had."""
        key: Labels = (route.provider.name if route is not None else "", "", route.name if route is not None else "",
                       str(status), *("" for _ in (self.labels.names if self.labels is not None else ())))
        self.requests[key] = self.requests.get(key, 0) + 1

    # -- published ------------------------------------------------------------------------
    def snapshot(self) -> Snapshot:
        counters: dict[str, list[list[Any]]] = {
            "majordomo_requests_total": _rows(self.requests),
            "majordomo_tokens_total": _rows(self.tokens),
            "majordomo_cost_usd_total": _rows(self.cost),
            "majordomo_upstream_errors_total": _rows(self.upstream_errors),
        }
        gauges: dict[str, list[list[Any]]] = {"majordomo_workers": [[1]]}
        if self.writer is not None:
            stats = self.writer()
            for name, value in (("rows_written", stats.rows_written), ("rows_spooled", stats.rows_spooled),
                                ("rows_replayed", stats.rows_replayed), ("duplicates", stats.duplicates),
                                ("database_errors", stats.write_errors), ("spool_errors", stats.spool_errors),
                                ("rows_dropped", stats.rows_dropped), ("rows_rejected", stats.rows_rejected)):
                counters[f"majordomo_writer_{name}_total"] = [[value]]
            gauges["majordomo_writer_queue_depth"] = [[stats.queue_depth + stats.inflight_rows]]
            gauges["majordomo_writer_spool_files"] = [[stats.spool_files]]
            gauges["majordomo_writer_spool_bytes"] = [[stats.spool_bytes]]
            gauges["majordomo_writer_database_up"] = [[1 if stats.database_ok else 0]]
        families: dict[str, dict[str, Any]] = {}
        for source in self.gauge_sources:
            for family, samples in source():
                if family.name not in GAUGES:  # defined elsewhere: described in the snapshot
                    families[family.name] = {"help": family.help, "labels": list(family.labels),
                                             "merge": family.merge}
                gauges[family.name] = [[*labels, value] for labels, value in samples]
        return {
            "pid": os.getpid(),
            "time": time.time(),
            "metadata_labels": list(self.labels.names) if self.labels is not None else [],
            "counters": counters,
            "gauges": gauges,
            "extra_gauges": families,
            "histograms": {
                "majordomo_request_duration_seconds": _rows(self.duration.series),
                "majordomo_time_to_first_token_seconds": _rows(self.ttft.series),
                "majordomo_gateway_overhead_seconds": _rows(self.overhead.series),
            },
        }


def _rows(table: dict[Labels, Any]) -> list[list[Any]]:
    return [[*labels, value] for labels, value in table.items()]
