"""Whether tracing is on, from the standard OTEL_* variables, without importing OpenTelemetry."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

__all__ = ["PROTOCOLS", "OtelConfigError", "OtelSettings", "otel_settings"]

#: what the Python OTLP exporters speak
PROTOCOLS = ("http/protobuf", "grpc")


class OtelConfigError(ValueError):
    """A standard OTEL_* variable has a value the gateway cannot honour."""


@dataclass(frozen=True, slots=True)
class OtelSettings:
    traces: bool
    metrics: bool
    traces_protocol: str
    metrics_protocol: str

    @property
    def enabled(self) -> bool:
        return self.traces or self.metrics


def _protocol(environ: Mapping[str, str], signal: str) -> str:
    name = f"OTEL_EXPORTER_OTLP_{signal}_PROTOCOL"
    value = environ.get(name) or environ.get("OTEL_EXPORTER_OTLP_PROTOCOL") or "http/protobuf"
    if value not in PROTOCOLS:
        source = name if environ.get(name) else "OTEL_EXPORTER_OTLP_PROTOCOL"
        raise OtelConfigError(f"{source}={value!r}: the gateway exports OTLP as http/protobuf or grpc")
    return value


def otel_settings(environ: Mapping[str, str]) -> OtelSettings:
    """Raises OtelConfigError for a protocol the exporters do not speak."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return OtelSettings(False, False, "http/protobuf", "http/protobuf")
    common = bool(environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"))
    traces = (common or bool(environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))) and \
        environ.get("OTEL_TRACES_EXPORTER", "otlp").strip().lower() != "none"
    metrics = (common or bool(environ.get("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT"))) and \
        environ.get("OTEL_METRICS_EXPORTER", "otlp").strip().lower() != "none"
    return OtelSettings(traces, metrics, _protocol(environ, "TRACES") if traces else "http/protobuf",
                        _protocol(environ, "METRICS") if metrics else "http/protobuf")
