"""The parts behind /metrics: workers' snapshots in a shared directory, their sum, the settings."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from majordomo_gateway.config import ConfigError, load_settings
from majordomo_gateway.metrics.definitions import Family
from majordomo_gateway.metrics.exposition import render
from majordomo_gateway.metrics.process import MAX_MODELS, ProcessMetrics
from majordomo_gateway.metrics.shared import GAUGE_MAX_AGE, SnapshotDirectory, merge
from majordomo_gateway.storage.records import RequestRecord

from tests.support.metrics import parse


def _row(model: str = "gpt-4o", status: int = 200, ms: float = 250.0) -> RequestRecord:
    now = datetime.now(UTC)
    return RequestRecord(id="r", majordomo_api_key_id=None, provider_api_key_hash=None, provider_api_key_alias=None,
                         provider="openai", route="openai", model=model, request_path="/v1/chat/completions",
                         request_method="POST", requested_at=now, responded_at=now, response_time_ms=ms,
                         status_code=status, usage_source="reported", input_tokens=7, output_tokens=3,
                         total_cost=Decimal("0.0125"))


def test_workers_snapshots_add_up_and_old_gauges_are_left_out() -> None:
    a, b = ProcessMetrics(), ProcessMetrics()
    for _ in range(3):
        a.observe(_row(), 0.2, None)
    b.observe(_row(), 0.2, None)
    b.observe(_row(status=502), 0.0, "unreachable")
    first, second = a.snapshot(), b.snapshot()
    second["pid"] = first["pid"] + 1
    first["gauges"]["majordomo_writer_database_up"] = [[1]]
    second["gauges"]["majordomo_writer_database_up"] = [[0]]
    first["gauges"]["majordomo_writer_spool_bytes"] = [[100]]
    second["gauges"]["majordomo_writer_spool_bytes"] = [[300]]
    got = parse(render(merge([first, second])).decode())
    assert got.value("majordomo_requests_total", status="200") == 4
    assert got.value("majordomo_requests_total", status="502") == 1
    assert got.value("majordomo_cost_usd_total") == pytest.approx(5 * 0.0125)
    assert got.value("majordomo_upstream_errors_total", kind="unreachable") == 1
    assert got.value("majordomo_workers") == 2
    assert got.value("majordomo_writer_database_up") == 0  # one writer cannot reach it
    assert got.value("majordomo_writer_spool_bytes") == 300  # the same directory: not summed
    # 0.25 s each, overhead 0.05 s each: le=0.25 holds them, le=0.1 does not.
    assert got.value("majordomo_request_duration_seconds_bucket", le="0.25") == 5
    assert got.value("majordomo_request_duration_seconds_bucket", le="0.1") == 0
    assert got.value("majordomo_gateway_overhead_seconds_bucket", le="0.05") == 4
    # A worker that stopped publishing: its counts stay, its gauges go.
    second["time"] = time.time() - GAUGE_MAX_AGE - 1
    later = parse(render(merge([first, second])).decode())
    assert later.value("majordomo_requests_total") == 5
    assert later.value("majordomo_workers") == 1 and later.value("majordomo_writer_database_up") == 1


def test_model_names_are_bounded() -> None:
    metrics = ProcessMetrics()
    for i in range(MAX_MODELS + 5):
        metrics.observe(_row(model=f"m{i}"), 0.0, None)
    got = parse(render(merge([metrics.snapshot()])).decode())
    assert got.value("majordomo_requests_total", model="other") == 5
    assert len(got.series("majordomo_requests_total")) == MAX_MODELS + 1


def test_extra_gauges_hook() -> None:
    metrics = ProcessMetrics()
    budget = Family("majordomo_example_remaining", "Remaining.", ("budget",), merge="max")
    metrics.add_gauges(lambda: [(budget, [(("team-a",), 12.5)])])
    got = parse(render(merge([metrics.snapshot()])).decode())
    assert got.value("majordomo_example_remaining", budget="team-a") == 12.5


def test_directory_publish_read_clear(tmp_path: Path) -> None:
    directory = SnapshotDirectory(tmp_path / "m")
    metrics = ProcessMetrics()
    metrics.observe(_row(), 0.1, None)
    snapshot = metrics.snapshot()
    directory.publish(snapshot)
    other = dict(snapshot, pid=snapshot["pid"] + 7)
    directory.publish(other)
    (tmp_path / "m" / "metrics-999.json").write_bytes(b"{not json")
    assert sorted(s["pid"] for s in directory.read_all()) == [snapshot["pid"], snapshot["pid"] + 7]
    assert [s["pid"] for s in directory.read_all(skip_pid=snapshot["pid"])] == [snapshot["pid"] + 7]
    assert not list((tmp_path / "m").glob(".tmp-*"))
    directory.clear()
    assert directory.read_all() == []


def test_metric_settings() -> None:
    settings = load_settings(None, environ={"MAJORDOMO_METRICS_LABELS": "Feature, X-Majordomo-User-Id",
                                            "MAJORDOMO_METRICS_PORT": "9464"})
    assert settings.metrics.labels == ("Feature", "User-Id") and settings.metrics.port == 9464
    assert settings.metrics.enabled and settings.log.format == "text"
    for value, problem in (("Model", "already have"), ("Feature,feature", "twice"), ("Key", "not metadata"),
                           ("Fea ture", "not a metadata key")):
        with pytest.raises(ConfigError, match=problem):
            load_settings(None, environ={"MAJORDOMO_METRICS_LABELS": value})
    with pytest.raises(ConfigError, match="MAJORDOMO_LOG_FORMAT"):
        load_settings(None, environ={"MAJORDOMO_LOG_FORMAT": "xml"})
