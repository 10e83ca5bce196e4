"""OpenTelemetry: one GenAI span per proxied request, and the GenAI client metrics.

Off unless the standard ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or ``..._TRACES_ENDPOINT`` /
``..._METRICS_ENDPOINT``) is set, and off with ``OTEL_SDK_DISABLED=true``.  Off, nothing of
OpenTelemetry is imported and a request pays one ``is None`` test.  On, everything else is the
standard ``OTEL_*`` settings, read by the SDK itself: ``OTEL_SERVICE_NAME`` (default
``majordomo-gateway``), ``OTEL_RESOURCE_ATTRIBUTES``, ``OTEL_EXPORTER_OTLP_PROTOCOL``
(``http/protobuf``, the default, or ``grpc``), ``OTEL_EXPORTER_OTLP_HEADERS``,
``OTEL_BSP_SCHEDULE_DELAY``, ``OTEL_METRIC_EXPORT_INTERVAL``, ``OTEL_PROPAGATORS``...

- ``settings``: whether it is on, and the checks ``majordomo serve`` runs before any worker starts;
- ``genai``: the GenAI semantic conventions' names for our paths and providers;
- ``otel``: the SDK set-up and the span of one request (imported only when on).
"""
