"""The OpenTelemetry SDK set-up, and one request's span and metrics.  Imported only when tracing is
on (tracing/settings.py), by ``Gateway.startup`` in each worker (after the fork: the exporters'
threads belong to the worker).

The span starts when the request goes upstream (its start time set back to the request's arrival),
so that the ``traceparent`` sent upstream names it; an incoming ``traceparent`` makes it the
caller's child.  It ends once the row is complete, after a stream's last byte.  Export is batched,
from the SDK's own thread: a collector that is slow or gone costs requests nothing, and the
exporter logs a warning.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Mapping
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from opentelemetry import propagate
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricExporter, PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.trace import SpanKind, Status, StatusCode, set_span_in_context

from majordomo_gateway.proxy.exchange import Exchange
from majordomo_gateway.storage.records import RequestRecord
from majordomo_gateway.tracing.genai import operation_name, provider_name
from majordomo_gateway.tracing.settings import OtelSettings

__all__ = ["DEFAULT_SERVICE_NAME", "Tracing"]

log = logging.getLogger("majordomo.tracing")

DEFAULT_SERVICE_NAME = "majordomo-gateway"
SHUTDOWN_TIMEOUT = 5.0
# The GenAI conventions' advised buckets.
_TOKEN_BUCKETS = (1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864)
_DURATION_BUCKETS = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92)


def _resource(environ: Mapping[str, str]) -> Resource:
    attributes: dict[str, str] = {}
    named = environ.get("OTEL_SERVICE_NAME") or "service.name=" in environ.get("OTEL_RESOURCE_ATTRIBUTES", "")
    if not named:
        attributes["service.name"] = DEFAULT_SERVICE_NAME
    with contextlib.suppress(PackageNotFoundError):
        attributes["service.version"] = version("majordomo-gateway")
    return Resource.create(attributes)


def _span_exporter(protocol: str) -> SpanExporter:
    # Each reads its endpoint, headers, timeout and compression from the OTEL_EXPORTER_OTLP_* variables.
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as Grpc

        return Grpc()
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as Http

    return Http()


def _metric_exporter(protocol: str) -> MetricExporter:
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter as Grpc

        return Grpc()
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter as Http

    return Http()


class Tracing:
    def __init__(self, settings: OtelSettings) -> None:
        # The SDK and the exporters read the OTEL_* variables from the process environment.
        resource = _resource(os.environ)
        self.tracer_provider: TracerProvider | None = None
        self.meter_provider: MeterProvider | None = None
        self.tracer: Any = None
        if settings.traces:
            self.tracer_provider = TracerProvider(resource=resource)
            # BatchSpanProcessor honours OTEL_BSP_SCHEDULE_DELAY, _MAX_QUEUE_SIZE, _MAX_EXPORT_BATCH_SIZE.
            self.tracer_provider.add_span_processor(BatchSpanProcessor(_span_exporter(settings.traces_protocol)))
            self.tracer = self.tracer_provider.get_tracer("majordomo_gateway")
        self.token_usage: Any = None
        self.duration: Any = None
        if settings.metrics:
            # The reader honours OTEL_METRIC_EXPORT_INTERVAL and OTEL_METRIC_EXPORT_TIMEOUT.
            reader = PeriodicExportingMetricReader(_metric_exporter(settings.metrics_protocol))
            self.meter_provider = MeterProvider(resource=resource, metric_readers=[reader])
            meter = self.meter_provider.get_meter("majordomo_gateway")
            self.token_usage = meter.create_histogram(
                "gen_ai.client.token.usage", unit="{token}", description="Tokens used per request, by type.",
                explicit_bucket_boundaries_advisory=_TOKEN_BUCKETS)
            self.duration = meter.create_histogram(
                "gen_ai.client.operation.duration", unit="s", description="Duration of each proxied request.",
                explicit_bucket_boundaries_advisory=_DURATION_BUCKETS)
        log.info("OpenTelemetry on: traces %s, metrics %s (service %s)",
                 settings.traces_protocol if settings.traces else "off",
                 settings.metrics_protocol if settings.metrics else "off",
                 resource.attributes.get("service.name"))

    # -- per request ---------------------------------------------------------------------------
    def start(self, ex: Exchange) -> None:
        """The request's span, a child of the caller's (``traceparent``); what goes upstream
        carries this span's context instead."""
        if self.tracer is None:
            return
        span = self._new_span(ex)
        carrier: dict[str, str] = {}
        propagate.inject(carrier, context=set_span_in_context(span))
        if carrier:
            names = {name.lower() for name in carrier}
            ex.forward = [(k, v) for k, v in ex.forward if k.lower() not in names] + list(carrier.items())

    def _new_span(self, ex: Exchange) -> Any:
        arrival = time.time_ns() - int((time.perf_counter() - ex.started) * 1e9)
        operation = operation_name(ex.path)
        model = ex.request_info.model
        record = ex.record
        attributes: dict[str, Any] = {"gen_ai.operation.name": operation}
        if record is not None:
            attributes["gen_ai.provider.name"] = provider_name(record.provider)
        if model:
            attributes["gen_ai.request.model"] = model
        span = self.tracer.start_span(f"{operation} {model}" if model else operation,
                                      context=propagate.extract(ex.headers.lowered), kind=SpanKind.CLIENT,
                                      attributes=attributes, start_time=arrival)
        ex.span = span
        return span

    def finish(self, ex: Exchange, record: RequestRecord) -> None:
        if self.tracer is not None:
            self._end_span(ex, record)
        if self.duration is not None:
            self._record_metrics(ex, record)

    def _end_span(self, ex: Exchange, record: RequestRecord) -> None:
        span = ex.span if ex.span is not None else self._new_span(ex)
        attributes: dict[str, Any] = {
            "gen_ai.provider.name": provider_name(record.provider),
            "majordomo.request_id": record.id,
            "majordomo.route": record.route,
            "majordomo.usage_source": record.usage_source,
            "majordomo.streamed": record.streamed,
            "http.response.status_code": record.status_code,
        }
        if record.model:
            attributes["gen_ai.response.model"] = record.model
        result = ex.result
        if result is not None:
            if result.response_id:
                attributes["gen_ai.response.id"] = result.response_id
            if result.finish_reasons:
                attributes["gen_ai.response.finish_reasons"] = result.finish_reasons
        if record.usage_source == "reported":
            attributes["gen_ai.usage.input_tokens"] = record.input_tokens
            attributes["gen_ai.usage.output_tokens"] = record.output_tokens
            attributes["gen_ai.usage.cache_read.input_tokens"] = record.cached_tokens
            attributes["gen_ai.usage.cache_creation.input_tokens"] = record.cache_creation_tokens
            attributes["gen_ai.usage.reasoning.output_tokens"] = record.reasoning_tokens
        if record.total_cost is not None:
            attributes["majordomo.cost_usd"] = float(record.total_cost)
        if record.aborted:
            attributes["majordomo.aborted"] = True
        for key, value in record.raw_metadata.items():
            attributes[f"majordomo.metadata.{key}"] = value
        if record.time_to_first_token_ms is not None:
            attributes["majordomo.time_to_first_chunk_ms"] = record.time_to_first_token_ms
            span.add_event("gen_ai.first_chunk",
                           timestamp=span.start_time + int(record.time_to_first_token_ms * 1_000_000))
        if record.status_code >= 400 or record.status_code == 0:
            attributes["error.type"] = ex.upstream_error or str(record.status_code)
            span.set_status(Status(StatusCode.ERROR, (record.error_message or "")[:200] or None))
        span.set_attributes(attributes)
        span.end()

    def _record_metrics(self, ex: Exchange, record: RequestRecord) -> None:
        attributes: dict[str, Any] = {"gen_ai.operation.name": operation_name(ex.path),
                                      "gen_ai.provider.name": provider_name(record.provider)}
        if ex.request_info.model:
            attributes["gen_ai.request.model"] = ex.request_info.model
        if record.model:
            attributes["gen_ai.response.model"] = record.model
        if record.status_code >= 400:
            attributes["error.type"] = ex.upstream_error or str(record.status_code)
        self.duration.record(record.response_time_ms / 1000, attributes)
        if record.usage_source == "reported":
            self.token_usage.record(record.input_tokens, {**attributes, "gen_ai.token.type": "input"})
            self.token_usage.record(record.output_tokens, {**attributes, "gen_ai.token.type": "output"})

    @staticmethod
    def trace_ids(ex: Exchange) -> tuple[str, str] | None:
        """(trace id, span id) of the request's span, for its access-log line."""
        if ex.span is None:
            return None
        context = ex.span.get_span_context()
        return format(context.trace_id, "032x"), format(context.span_id, "016x")

    # -- lifecycle -----------------------------------------------------------------------------
    async def close(self) -> None:
        """Flush what is batched, bounded: an unreachable collector must not hold up a stop."""
        for provider in (self.tracer_provider, self.meter_provider):
            if provider is None:
                continue
            try:
                await asyncio.wait_for(asyncio.to_thread(provider.shutdown), timeout=SHUTDOWN_TIMEOUT)
            except TimeoutError:
                log.warning("OpenTelemetry export did not finish within %.0f s of stopping; dropped",
                            SHUTDOWN_TIMEOUT)
