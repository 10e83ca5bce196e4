"""A real OTLP receiver on loopback: OTLP/HTTP (``/v1/traces``, ``/v1/metrics``, protobuf) and
OTLP/gRPC, decoding what it gets with opentelemetry-proto, as a collector would."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

from tests.support.processes import free_port


def any_value(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return [any_value(v) for v in value.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: any_value(kv.value) for kv in value.kvlist_value.values}
    return getattr(value, kind) if kind else None


def _attributes(items: Any) -> dict[str, Any]:
    return {kv.key: any_value(kv.value) for kv in items}


@dataclass
class ReceivedSpan:
    name: str
    trace_id: str
    span_id: str
    parent_span_id: str
    kind: int
    start_ns: int
    end_ns: int
    attributes: dict[str, Any]
    events: list[tuple[str, int]]
    status_code: int
    resource: dict[str, Any]


@dataclass
class ReceivedPoint:
    """One histogram data point of an exported metric."""

    metric: str
    unit: str
    attributes: dict[str, Any]
    count: int
    sum: float


@dataclass
class OtlpReceiver:
    spans: list[ReceivedSpan] = field(default_factory=list)
    points: list[ReceivedPoint] = field(default_factory=list)
    #: (path or gRPC method, content type) of every export received
    exports: list[tuple[str, str]] = field(default_factory=list)
    port: int = field(default_factory=free_port)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def take_traces(self, data: bytes, how: str, content_type: str) -> None:
        request = ExportTraceServiceRequest()
        request.ParseFromString(data)
        with self._lock:
            self.exports.append((how, content_type))
            for resource_spans in request.resource_spans:
                resource = _attributes(resource_spans.resource.attributes)
                for scope in resource_spans.scope_spans:
                    for span in scope.spans:
                        self.spans.append(ReceivedSpan(
                            span.name, span.trace_id.hex(), span.span_id.hex(), span.parent_span_id.hex(),
                            span.kind, span.start_time_unix_nano, span.end_time_unix_nano,
                            _attributes(span.attributes), [(e.name, e.time_unix_nano) for e in span.events],
                            span.status.code, resource))

    def take_metrics(self, data: bytes, how: str, content_type: str) -> None:
        request = ExportMetricsServiceRequest()
        request.ParseFromString(data)
        with self._lock:
            self.exports.append((how, content_type))
            for resource_metrics in request.resource_metrics:
                for scope in resource_metrics.scope_metrics:
                    for metric in scope.metrics:
                        if metric.WhichOneof("data") != "histogram":
                            continue
                        for point in metric.histogram.data_points:
                            self.points.append(ReceivedPoint(metric.name, metric.unit, _attributes(point.attributes),
                                                             point.count, point.sum))

    def wait_for(self, check: Callable[[OtlpReceiver], bool], timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while not check(self):
            if time.monotonic() > deadline:
                raise AssertionError(f"the OTLP receiver did not get what was expected within {timeout}s: "
                                     f"{len(self.spans)} spans, {len(self.points)} points, exports {self.exports}")
            time.sleep(0.05)

    def span_for(self, request_id: str, timeout: float = 15.0) -> ReceivedSpan:
        def found(receiver: OtlpReceiver) -> bool:
            return any(s.attributes.get("majordomo.request_id") == request_id for s in receiver.spans)

        self.wait_for(found, timeout)
        return next(s for s in self.spans if s.attributes.get("majordomo.request_id") == request_id)


def _http_handler(receiver: OtlpReceiver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            data = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            content_type = self.headers.get("Content-Type", "")
            if self.headers.get("Content-Encoding") == "gzip":
                import gzip

                data = gzip.decompress(data)
            if self.path == "/v1/traces":
                receiver.take_traces(data, self.path, content_type)
                body = ExportTraceServiceResponse().SerializeToString()
            elif self.path == "/v1/metrics":
                receiver.take_metrics(data, self.path, content_type)
                body = ExportMetricsServiceResponse().SerializeToString()
            else:
                self.send_response(404)
                self.end_headers()
                return
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


def http_receiver() -> Iterator[OtlpReceiver]:
    receiver = OtlpReceiver()
    server = ThreadingHTTPServer(("127.0.0.1", receiver.port), _http_handler(receiver))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()


def grpc_receiver() -> Iterator[OtlpReceiver]:
    import grpc
    from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2_grpc
    from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc

    receiver = OtlpReceiver()

    class Traces(trace_service_pb2_grpc.TraceServiceServicer):
        def Export(self, request: ExportTraceServiceRequest, context: Any) -> ExportTraceServiceResponse:
            receiver.take_traces(request.SerializeToString(), "grpc TraceService/Export", "application/grpc")
            return ExportTraceServiceResponse()

    class Metrics(metrics_service_pb2_grpc.MetricsServiceServicer):
        def Export(self, request: ExportMetricsServiceRequest, context: Any) -> ExportMetricsServiceResponse:
            receiver.take_metrics(request.SerializeToString(), "grpc MetricsService/Export", "application/grpc")
            return ExportMetricsServiceResponse()

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(Traces(), server)
    metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(Metrics(), server)
    server.add_insecure_port(f"127.0.0.1:{receiver.port}")
    server.start()
    try:
        yield receiver
    finally:
        server.stop(grace=None)
