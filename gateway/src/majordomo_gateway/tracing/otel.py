"""Tracing on: one request's span and GenAI metrics, and their batched export.  Imported only when
tracing is on (tracing/settings.py), by each worker's ``Gateway`` (after the fork: the export
thread belongs to the worker).

Why not the SDK's tracer: measured per request (bench/observability_cost.py), an SDK span with
the GenAI attributes costs ~30 µs to make and ~98 µs to encode for export, the SDK's histograms
~15 µs per ``record``, against a budget of 50 µs for all of it.  So the request path keeps only
what a span is (ids, times, attributes: a few µs), the export thread encodes a batch with
tracing/encode.py, and the SDK's own OTLP exporters send it: their endpoint, headers, TLS,
compression, timeout and retries, all from the standard OTEL_EXPORTER_OTLP_* variables.  The
GenAI metrics are counted in plain buckets and exported as the SDK's metrics data through its OTLP
metric exporter, every ``OTEL_METRIC_EXPORT_INTERVAL``.

The span starts when the request goes upstream (its start time set back to the request's
arrival), so that the ``traceparent`` sent upstream names it; an incoming ``traceparent`` makes it
the caller's child (its ``tracestate`` is kept).  It ends once the row is complete, after a
stream's last byte.  A collector that is slow or gone costs requests nothing: spans beyond
``OTEL_BSP_MAX_QUEUE_SIZE`` are dropped, and the exporter's failures are one warning a minute.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from bisect import bisect_left
from collections import deque
from collections.abc import Callable, Mapping
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from opentelemetry.sdk.resources import Resource

from majordomo_gateway.proxy.exchange import Exchange
from majordomo_gateway.storage.records import RequestRecord
from majordomo_gateway.tracing.context import format_traceparent, new_span_id, new_trace_id, parse_traceparent
from majordomo_gateway.tracing.encode import SpanRecord, encode_scope, encode_traces
from majordomo_gateway.tracing.genai import operation_name, provider_name
from majordomo_gateway.tracing.sampling import Sampler
from majordomo_gateway.tracing.settings import OtelSettings

__all__ = ["DEFAULT_SERVICE_NAME", "EXPORT_WARNING_INTERVAL", "QuietExportFailures", "Tracing"]

log = logging.getLogger("majordomo.tracing")

DEFAULT_SERVICE_NAME = "majordomo-gateway"
SCOPE_NAME = "majordomo_gateway"
SHUTDOWN_TIMEOUT = 5.0
# The GenAI conventions' advised buckets.
TOKEN_BUCKETS = (1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864)
DURATION_BUCKETS = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92)
#: the exporters' loggers: one line per failed batch, as ERROR
_EXPORTER_LOGGERS = ("opentelemetry.exporter.otlp.proto.http.trace_exporter",
                     "opentelemetry.exporter.otlp.proto.http.metric_exporter",
                     "opentelemetry.exporter.otlp.proto.grpc.exporter")
EXPORT_WARNING_INTERVAL = 60.0


def _version() -> str | None:
    try:
        return version("majordomo-gateway")
    except PackageNotFoundError:
        return None


def _env_int(environ: Mapping[str, str], name: str, default: int) -> int:
    try:
        value = int(environ.get(name, default))
    except ValueError:
        log.warning("%s=%r is not a whole number; using %d", name, environ.get(name), default)
        return default
    return value if value > 0 else default


def _resource(environ: Mapping[str, str]) -> Resource:
    """OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES, through the SDK; our name when neither names
    the service."""
    attributes: dict[str, str] = {}
    if not environ.get("OTEL_SERVICE_NAME") and "service.name=" not in environ.get("OTEL_RESOURCE_ATTRIBUTES", ""):
        attributes["service.name"] = DEFAULT_SERVICE_NAME
    if _version():
        attributes["service.version"] = _version() or ""
    return Resource.create(attributes)


class QuietExportFailures(logging.Filter):
    """A collector that is down is an operator's warning, not an error per batch: one line per
    logger per ``EXPORT_WARNING_INTERVAL``, as WARNING."""

    def __init__(self, interval: float = EXPORT_WARNING_INTERVAL) -> None:
        super().__init__()
        self.interval = interval
        self._last = -interval

    def filter(self, record: logging.LogRecord) -> bool:
        now = time.monotonic()
        if now - self._last < self.interval:
            return False
        self._last = now
        if record.levelno > logging.WARNING:
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        record.msg = f"{record.msg} (OpenTelemetry export; requests are not affected; the next such line " \
                     f"in {self.interval:.0f} s at the earliest)"
        return True


def _quiet_exporters() -> None:
    for name in _EXPORTER_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, QuietExportFailures) for f in logger.filters):
            logger.addFilter(QuietExportFailures())


Send = Callable[[bytes, int], bool]


def _trace_sender(protocol: str) -> Send:
    """The SDK's OTLP span exporter, given bytes encoded already (tracing/encode.py)."""
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as Grpc
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
        from opentelemetry.sdk.trace.export import SpanExportResult

        class EncodedGrpc(Grpc):
            # The exporter's hooks for turning what it is given into the request, and counting it.
            def _translate_data(self, data: Any) -> ExportTraceServiceRequest:
                request: ExportTraceServiceRequest = ExportTraceServiceRequest.FromString(data[0])
                return request

            def _count_data(self, data: Any) -> int:
                return int(data[1])

        grpc_exporter = EncodedGrpc()
        return lambda payload, count: grpc_exporter.export((payload, count)) is SpanExportResult.SUCCESS  # type: ignore[arg-type]
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as Http

    http_exporter = Http()
    client = http_exporter._client  # endpoint, headers, TLS, compression and retries, as configured

    def send(payload: bytes, count: int) -> bool:
        return bool(client.export(payload).success)

    return send


class _Buckets:
    """Explicit-bucket histograms by attribute set: [counts per bucket..., sum, count, min, max]."""

    __slots__ = ("bounds", "series")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.series: dict[tuple[tuple[str, Any], ...], list[float]] = {}

    def add(self, key: tuple[tuple[str, Any], ...], value: float) -> None:
        row = self.series.get(key)
        if row is None:
            row = self.series[key] = [0] * (len(self.bounds) + 1) + [0.0, 0, value, value]
        row[bisect_left(self.bounds, value)] += 1
        row[-4] += value
        row[-3] += 1
        if value < row[-2]:
            row[-2] = value
        if value > row[-1]:
            row[-1] = value


class Live:
    """A span between its start and its row."""

    __slots__ = ("flags", "parent_id", "remote", "sampled", "span_id", "start_ns", "trace_id", "trace_state")

    def __init__(self, trace_id: bytes, span_id: bytes, parent_id: bytes, flags: int, start_ns: int,
                 trace_state: str | None, remote: bool) -> None:
        self.trace_id = trace_id
        self.span_id = span_id
        self.parent_id = parent_id
        self.flags = flags
        self.sampled = bool(flags & 1)
        self.start_ns = start_ns
        self.trace_state = trace_state
        self.remote = remote


class Tracing:
    def __init__(self, settings: OtelSettings, environ: Mapping[str, str] | None = None) -> None:
        # The exporters read the OTEL_* variables from the process environment; so do we.
        environ = os.environ if environ is None else environ
        _quiet_exporters()
        self.resource = _resource(environ)
        self._resource_attributes = dict(self.resource.attributes)
        self._scope = encode_scope(SCOPE_NAME, _version())
        self.sampler = Sampler.from_environment(environ)
        self.traces = settings.traces
        self._queue: deque[SpanRecord] = deque()
        self._queue_max = _env_int(environ, "OTEL_BSP_MAX_QUEUE_SIZE", 2048)
        self._batch = _env_int(environ, "OTEL_BSP_MAX_EXPORT_BATCH_SIZE", 512)
        self._delay = _env_int(environ, "OTEL_BSP_SCHEDULE_DELAY", 5000) / 1000
        self.dropped = 0
        self._send: Send | None = _trace_sender(settings.traces_protocol) if settings.traces else None
        self._metric_exporter: Any = None
        self._metrics_interval = _env_int(environ, "OTEL_METRIC_EXPORT_INTERVAL", 60000) / 1000
        self._metrics_lock = threading.Lock()
        self._metrics_start = time.time_ns()
        self.token_usage = _Buckets(TOKEN_BUCKETS)
        self.duration = _Buckets(DURATION_BUCKETS)
        if settings.metrics:
            self._metric_exporter = _metric_exporter(settings.metrics_protocol)
        self._wake = threading.Event()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="majordomo-otel-export", daemon=True)
        self._thread.start()
        log.info("OpenTelemetry on: traces %s, metrics %s (service %s)",
                 settings.traces_protocol if settings.traces else "off",
                 settings.metrics_protocol if settings.metrics else "off",
                 self._resource_attributes.get("service.name"))

    # -- per request ---------------------------------------------------------------------------
    def start(self, ex: Exchange) -> None:
        """The request's span, a child of the caller's (``traceparent``); what goes upstream
        carries this span's context instead."""
        if not self.traces:
            return
        live = self._begin(ex)
        incoming = ex.headers.lowered.get("traceparent")
        forward = ex.forward
        if incoming is not None:
            forward = [(k, v) for k, v in forward if k.lower() != "traceparent"]
        forward.append(("traceparent", format_traceparent(live.trace_id, live.span_id, live.flags)))
        ex.forward = forward

    def _begin(self, ex: Exchange) -> Live:
        arrival = time.time_ns() - int((time.perf_counter() - ex.started) * 1e9)
        lowered = ex.headers.lowered
        parent = parse_traceparent(lowered.get("traceparent"))
        if parent is None:
            trace_id, parent_id, trace_state, parent_flags = new_trace_id(), b"", None, None
        else:
            trace_id, parent_id, parent_flags = parent
            trace_state = lowered.get("tracestate")
        sampled = self.sampler.sampled(trace_id, parent_flags)
        live = Live(trace_id, new_span_id(), parent_id, 1 if sampled else 0, arrival, trace_state, parent is not None)
        ex.span = live
        return live

    def finish(self, ex: Exchange, record: RequestRecord) -> None:
        if self.traces:
            live: Live = ex.span if ex.span is not None else self._begin(ex)
            if live.sampled:
                self._end(ex, record, live)
        if self._metric_exporter is not None:
            self._count(ex, record)

    def _end(self, ex: Exchange, record: RequestRecord, live: Live) -> None:
        operation = operation_name(ex.path)
        model = ex.request_info.model
        attributes: list[tuple[str, Any]] = [
            ("gen_ai.operation.name", operation),
            ("gen_ai.provider.name", provider_name(record.provider)),
            ("gen_ai.request.model", model),
            ("gen_ai.response.model", record.model),
            ("majordomo.request_id", record.id),
            ("majordomo.route", record.route),
            ("majordomo.usage_source", record.usage_source),
            ("majordomo.streamed", record.streamed),
            ("http.response.status_code", record.status_code),
        ]
        result = ex.result
        if result is not None:
            attributes += (("gen_ai.response.id", result.response_id),
                           ("gen_ai.response.finish_reasons", result.finish_reasons or None))
        if record.usage_source == "reported":
            attributes += (("gen_ai.usage.input_tokens", record.input_tokens),
                           ("gen_ai.usage.output_tokens", record.output_tokens),
                           ("gen_ai.usage.cache_read.input_tokens", record.cached_tokens),
                           ("gen_ai.usage.cache_creation.input_tokens", record.cache_creation_tokens),
                           ("gen_ai.usage.reasoning.output_tokens", record.reasoning_tokens))
        if record.total_cost is not None:
            attributes.append(("majordomo.cost_usd", float(record.total_cost)))
        if record.aborted:
            attributes.append(("majordomo.aborted", True))
        for key, value in record.raw_metadata.items():
            attributes.append((f"majordomo.metadata.{key}", value))
        event = None
        if record.time_to_first_token_ms is not None:
            attributes.append(("majordomo.time_to_first_chunk_ms", record.time_to_first_token_ms))
            event = ("gen_ai.first_chunk", live.start_ns + int(record.time_to_first_token_ms * 1_000_000))
        error = record.status_code >= 400 or record.status_code == 0
        if error:
            attributes.append(("error.type", ex.upstream_error or str(record.status_code)))
        span = SpanRecord(live.trace_id, live.span_id, live.parent_id, live.flags,
                          f"{operation} {model}" if model else operation, live.start_ns, time.time_ns(), attributes,
                          trace_state=live.trace_state, event=event, error=error,
                          status_message=(record.error_message or "")[:200] if error else None,
                          remote_parent=live.remote)
        queue = self._queue
        if len(queue) >= self._queue_max:
            self.dropped += 1
            return
        queue.append(span)
        if len(queue) >= self._batch:
            self._wake.set()

    def _count(self, ex: Exchange, record: RequestRecord) -> None:
        key: tuple[tuple[str, Any], ...] = (
            ("gen_ai.operation.name", operation_name(ex.path)),
            ("gen_ai.provider.name", provider_name(record.provider)),
            ("gen_ai.request.model", ex.request_info.model or ""),
            ("gen_ai.response.model", record.model or ""),
        )
        if record.status_code >= 400:
            key += (("error.type", ex.upstream_error or str(record.status_code)),)
        with self._metrics_lock:
            self.duration.add(key, record.response_time_ms / 1000)
            if record.usage_source == "reported":
                self.token_usage.add((*key, ("gen_ai.token.type", "input")), record.input_tokens)
                self.token_usage.add((*key, ("gen_ai.token.type", "output")), record.output_tokens)

    @staticmethod
    def trace_ids(ex: Exchange) -> tuple[str, str] | None:
        """(trace id, span id) of the request's span, for its access-log line."""
        live = ex.span
        if live is None:
            return None
        return live.trace_id.hex(), live.span_id.hex()

    # -- the export thread ---------------------------------------------------------------------
    def _run(self) -> None:
        next_metrics = time.monotonic() + self._metrics_interval
        while True:
            timeout = self._delay if self._send is not None else self._metrics_interval
            if self._metric_exporter is not None:
                timeout = max(0.0, min(timeout, next_metrics - time.monotonic()))
            self._wake.wait(timeout)
            self._wake.clear()
            stopping = self._stopping
            try:
                self._export_spans(everything=stopping)
                if self._metric_exporter is not None and (stopping or time.monotonic() >= next_metrics):
                    next_metrics = time.monotonic() + self._metrics_interval
                    self._export_metrics()
            except Exception:
                log.exception("OpenTelemetry export failed")
            if stopping:
                return

    def _export_spans(self, everything: bool = False) -> None:
        queue, send = self._queue, self._send
        if send is None:
            return
        while queue:
            batch = [queue.popleft() for _ in range(min(self._batch, len(queue)))]
            send(encode_traces(self._resource_attributes, self._scope, batch, self.resource.schema_url), len(batch))
            if not everything and len(queue) < self._batch:
                return

    def _export_metrics(self) -> None:
        from opentelemetry.sdk.metrics.export import (
            AggregationTemporality,
            Histogram,
            HistogramDataPoint,
            Metric,
            MetricsData,
            ResourceMetrics,
            ScopeMetrics,
        )
        from opentelemetry.sdk.util.instrumentation import InstrumentationScope

        now = time.time_ns()
        metrics = []
        with self._metrics_lock:
            tables = [(name, unit, text, buckets, {k: list(v) for k, v in buckets.series.items()})
                      for name, unit, text, buckets in (
                          ("gen_ai.client.token.usage", "{token}", "Tokens used per request, by type.",
                           self.token_usage),
                          ("gen_ai.client.operation.duration", "s", "Duration of each proxied request.",
                           self.duration))]
        for name, unit, text, buckets, series in tables:
            if not series:
                continue
            points = [HistogramDataPoint(attributes=dict(key), start_time_unix_nano=self._metrics_start,
                                         time_unix_nano=now, count=int(row[-3]), sum=row[-4],
                                         bucket_counts=[int(c) for c in row[:-4]],
                                         explicit_bounds=[float(b) for b in buckets.bounds], min=row[-2], max=row[-1])
                      for key, row in series.items()]
            metrics.append(Metric(name=name, description=text, unit=unit,
                                  data=Histogram(data_points=points,
                                                 aggregation_temporality=AggregationTemporality.CUMULATIVE)))
        if not metrics:
            return
        scope = InstrumentationScope(SCOPE_NAME, _version())
        data = MetricsData([ResourceMetrics(self.resource, [ScopeMetrics(scope, metrics, "")],
                                            self.resource.schema_url)])
        self._metric_exporter.export(data)

    # -- lifecycle -----------------------------------------------------------------------------
    async def close(self) -> None:
        """Export what is left, bounded: an unreachable collector must not hold up a stop."""
        import asyncio

        self._stopping = True
        self._wake.set()
        await asyncio.to_thread(self._thread.join, SHUTDOWN_TIMEOUT)
        if self._thread.is_alive():
            log.warning("OpenTelemetry export did not finish within %.0f s of stopping; dropped", SHUTDOWN_TIMEOUT)
        if self.dropped:
            log.warning("OpenTelemetry: %d spans dropped (more than OTEL_BSP_MAX_QUEUE_SIZE=%d waiting)",
                        self.dropped, self._queue_max)
        if self._metric_exporter is not None:
            with contextlib.suppress(Exception):
                self._metric_exporter.shutdown(timeout_millis=1000)


def _metric_exporter(protocol: str) -> Any:
    """The SDK's OTLP metric exporter: its encoding is slow, but runs once per interval per series."""
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter as Grpc

        return Grpc()
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter as Http

    return Http()
