"""OpenTelemetry from a real ``majordomo serve``: OTLP over gRPC to a real receiver, a collector that is
not there, and a protocol the exporters do not speak."""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support import BIN, GatewayProcess, free_port
from tests.support.client import post
from tests.support.otlp import OtlpReceiver, grpc_receiver

CHAT = {"model": "gpt-4o", "messages": [{"role": "user", "content": "Hello!"}]}
TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


@pytest.fixture
def grpc_collector() -> Iterator[OtlpReceiver]:
    yield from grpc_receiver()


def _gateway(mock_upstream: Any, workdir: Path, env: dict[str, str]) -> GatewayProcess:
    return GatewayProcess(database_url=f"sqlite:///{workdir / 'majordomo.db'}", upstream_url=mock_upstream.url,
                          workdir=workdir, extra_env=env)


async def test_grpc_export_from_two_workers(mock_upstream: Any, tmp_path: Path, grpc_collector: OtlpReceiver) -> None:
    gw = _gateway(mock_upstream, tmp_path, {
        "OTEL_EXPORTER_OTLP_ENDPOINT": grpc_collector.endpoint, "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
        "OTEL_EXPORTER_OTLP_INSECURE": "true", "OTEL_BSP_SCHEDULE_DELAY": "100",
        "OTEL_METRIC_EXPORT_INTERVAL": "300", "OTEL_RESOURCE_ATTRIBUTES": "deployment.environment=test",
        "MAJORDOMO_SERVER_WORKERS": "2"}).start()
    try:
        response, _ = await post(gw, "/v1/chat/completions", CHAT, {"Authorization": "Bearer sk-test",
                                                                    "traceparent": TRACEPARENT})
        assert response.status == 200
        span = grpc_collector.span_for(response.headers["X-Majordomo-Request-Id"])
        assert span.trace_id == "0af7651916cd43dd8448eb211c80319c" and span.parent_span_id == "b7ad6b7169203331"
        assert span.attributes["majordomo.cost_usd"] > 0
        assert span.resource["service.name"] == "majordomo-gateway"
        assert span.resource["deployment.environment"] == "test"
        grpc_collector.wait_for(lambda r: any(p.metric == "gen_ai.client.token.usage" for p in r.points))
        assert {how for how, _ in grpc_collector.exports} == {"grpc TraceService/Export",
                                                               "grpc MetricsService/Export"}
        # The upstream saw the gateway's span as the parent, not the caller's.
        [seen] = [r for r in mock_upstream.requests if r.headers.get("traceparent", "").endswith(f"{span.span_id}-01")]
        assert seen.headers["traceparent"] == f"00-{span.trace_id}-{span.span_id}-01"
    finally:
        gw.stop()


async def test_an_unreachable_collector_costs_a_warning(mock_upstream: Any, tmp_path: Path) -> None:
    gw = _gateway(mock_upstream, tmp_path, {
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{free_port()}", "OTEL_BSP_SCHEDULE_DELAY": "50",
        "OTEL_EXPORTER_OTLP_TIMEOUT": "1", "OTEL_METRICS_EXPORTER": "none"}).start()
    try:
        for _ in range(20):
            started = time.monotonic()
            response, _ = await post(gw, "/v1/chat/completions", CHAT, {"Authorization": "Bearer sk-test"})
            assert response.status == 200
            assert time.monotonic() - started < 1.0  # never waits on the exporter
        deadline = time.monotonic() + 20
        while "OpenTelemetry export; requests are not affected" not in gw.log_text():
            assert time.monotonic() < deadline, gw.log_text()[-3000:]
            await asyncio.sleep(0.2)
        await asyncio.sleep(2)  # batches keep failing every 50 ms: still one line
        exporter_lines = [line for line in gw.log_text().splitlines() if "opentelemetry.exporter" in line]
        assert len(exporter_lines) == 1 and " WARNING " in exporter_lines[0], exporter_lines
        await gw.row(response.headers["X-Majordomo-Request-Id"])
        assert await gw.count_rows() == 20
    finally:
        started = time.monotonic()
        gw.stop()
        assert time.monotonic() - started < 15  # the flush at stop is bounded


def test_a_protocol_the_exporters_do_not_speak_stops_serve(mock_upstream: Any, tmp_path: Path) -> None:
    gw = _gateway(mock_upstream, tmp_path, {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318",
                                            "OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"})
    done = subprocess.run([str(BIN / "majordomo"), "serve"], env=gw.env(), cwd=tmp_path, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode != 0
    assert "OTEL_EXPORTER_OTLP_PROTOCOL='http/json'" in done.stderr and "http/protobuf or grpc" in done.stderr
