"""CPU per request of what issue 15 added to the request path, measured in-process, precisely:
the Prometheus counters (metrics/process.py), the OpenTelemetry span and GenAI metrics
(tracing/otel.py, with the batched OTLP/HTTP export to a local sink, bench/otlp_sink.py: the export
thread's CPU is included, process CPU time counts every thread), and the JSON access-log line.

    .venv/bin/python bench/observability_cost.py [--n 20000] [--out bench/results/observability-cost.json]

Each cost is (process CPU time of N requests' hook calls) / N, best of --reps; the wrk runs of
bench/gateway_bench.py (docs/performance.md) show the same from outside.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from otlp_sink import serve  # noqa: E402


def _record():  # type: ignore[no-untyped-def]
    from majordomo_gateway.storage.records import RequestRecord

    now = datetime.now(UTC)
    return RequestRecord(id="01a24bb6-e40a-75aa-81c1-366a736ecc5e", majordomo_api_key_id="k", provider_api_key_hash="h",
                         provider_api_key_alias=None, provider="openai", route="openai", model="gpt-4o-2024-08-06",
                         request_path="/v1/chat/completions", request_method="POST", requested_at=now,
                         responded_at=now, response_time_ms=12.5, status_code=200, usage_source="reported",
                         input_tokens=1200, output_tokens=80, cached_tokens=200, reasoning_tokens=10,
                         total_cost=Decimal("0.0042"), raw_metadata={"Feature": "chat", "User-Id": "u-1"})


def _exchange(record):  # type: ignore[no-untyped-def]
    from majordomo_gateway.providers.base import RequestInfo, UsageResult
    from majordomo_gateway.proxy.exchange import Exchange
    from majordomo_gateway.proxy.headers import ClientHeaders

    headers = ClientHeaders(forward=[("content-type", "application/json"), ("authorization", "Bearer sk"),
                                     ("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")])
    headers.lowered = dict(headers.forward)
    ex = Exchange({}, None, None, time.perf_counter(), record.requested_at)  # type: ignore[arg-type]
    ex.path, ex.headers, ex.record = "/v1/chat/completions", headers, record
    ex.request_info = RequestInfo(model="gpt-4o")
    ex.forward = list(headers.forward)
    ex.result = UsageResult(response_id="chatcmpl-1", finish_reasons=["stop"])
    return ex


def measure(fn: Callable[[], None], n: int, reps: int, after: Callable[[], None] | None = None) -> float:
    best = float("inf")
    for _ in range(reps):
        start = time.process_time()
        for _ in range(n):
            fn()
        if after is not None:
            after()
        best = min(best, (time.process_time() - start) / n * 1e6)
    return round(best, 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=20000)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    # The collector in a process of its own: its CPU is not the gateway's.
    probe = serve(0)
    port = probe.server_address[1]
    probe.shutdown()
    probe.server_close()
    sink = subprocess.Popen([sys.executable, str(HERE / "otlp_sink.py"), "--port", str(port)])
    time.sleep(0.5)
    # A queue that never drops: every span measured is a span encoded and sent.
    os.environ.update({"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{port}", "OTEL_BSP_SCHEDULE_DELAY": "200",
                       "OTEL_BSP_MAX_QUEUE_SIZE": str(args.n * 2)})

    from majordomo_gateway.logs.access import log_access
    from majordomo_gateway.logs.json_lines import JsonFormatter
    from majordomo_gateway.metrics.labels import MetadataLabels
    from majordomo_gateway.metrics.process import ProcessMetrics
    from majordomo_gateway.tracing.otel import Tracing
    from majordomo_gateway.tracing.settings import otel_settings

    record = _record()
    results: dict[str, object] = {"n": args.n, "reps": args.reps, "python": sys.version.split()[0]}
    metrics = ProcessMetrics()
    results["metrics_observe_us"] = measure(lambda: metrics.observe(record, 0.0123, None), args.n, args.reps)
    labelled = ProcessMetrics(MetadataLabels(["Feature", "User-Id"], 100))
    results["metrics_observe_two_labels_us"] = measure(lambda: labelled.observe(record, 0.0123, None),
                                                       args.n, args.reps)

    settings = otel_settings(os.environ)
    traces_only = Tracing(type(settings)(True, False, "http/protobuf", "http/protobuf"))
    both = Tracing(settings)

    def traced(tracing: Tracing) -> Callable[[], None]:
        def one() -> None:
            ex = _exchange(record)
            tracing.start(ex)
            tracing.finish(ex, record)
        return one

    def flush(tracing: Tracing) -> Callable[[], None]:
        def done() -> None:  # until the export thread has sent everything (its CPU is counted too)
            tracing._wake.set()
            while tracing._queue:
                time.sleep(0.001)
            time.sleep(0.05)
        return done

    baseline = measure(lambda: _exchange(record), args.n, args.reps)  # building the test's Exchange
    sending = traces_only._send
    traces_only._send = lambda payload, count: True
    results["tracing_spans_not_sent_us"] = round(
        measure(traced(traces_only), args.n, args.reps, flush(traces_only)) - baseline, 2)
    traces_only._send = sending
    results["tracing_spans_us"] = round(
        measure(traced(traces_only), args.n, args.reps, flush(traces_only)) - baseline, 2)
    results["tracing_spans_and_metrics_us"] = round(measure(traced(both), args.n, args.reps, flush(both)) - baseline, 2)

    handler = logging.StreamHandler(io.StringIO())
    handler.setFormatter(JsonFormatter())
    access = logging.getLogger("majordomo.access")
    access.addHandler(handler)
    access.setLevel(logging.INFO)
    access.propagate = False
    results["json_access_log_us"] = measure(lambda: log_access(record, ("a" * 32, "b" * 16)), args.n, args.reps)
    sink.terminate()
    # For comparison: prometheus-client's multiprocess mode on the same series (a process of its
    # own: the mode is chosen at import).
    compared = subprocess.run([sys.executable, str(HERE / "prometheus_multiprocess_cost.py"), "--n", str(args.n),
                               "--reps", str(args.reps)], capture_output=True, text=True, check=True)
    results.update(json.loads(compared.stdout))
    results["spans_dropped"] = traces_only.dropped + both.dropped
    print(json.dumps(results, indent=2))
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
