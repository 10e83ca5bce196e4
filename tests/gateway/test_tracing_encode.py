"""The hand-written OTLP encoder, read back by opentelemetry-proto; trace context; sampling."""

from __future__ import annotations

import pytest
from majordomo_gateway.tracing.context import format_traceparent, new_span_id, new_trace_id, parse_traceparent
from majordomo_gateway.tracing.encode import SpanRecord, encode_scope, encode_traces
from majordomo_gateway.tracing.sampling import Sampler
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from tests.support.otlp import any_value

ATTRIBUTES = [("s", "chat"), ("long", "x" * 300), ("i", 1_200_000), ("small", 3), ("neg", -5), ("f", 0.0042),
              ("t", True), ("no", False), ("list", ["stop", "length"]), ("none", None), ("utf", "héllo ✓"),
              ("big", 2**62)]


def _decode(data: bytes) -> ExportTraceServiceRequest:
    request = ExportTraceServiceRequest()
    request.ParseFromString(data)
    return request


def test_spans_decode_as_written() -> None:
    trace_id, span_id, parent = new_trace_id(), new_span_id(), new_span_id()
    spans = [SpanRecord(trace_id, span_id, parent, 1, "chat gpt-4o", 1_000, 2_000, list(ATTRIBUTES),
                        trace_state="vendor=1", event=("gen_ai.first_chunk", 1_500), error=True,
                        status_message="boom", remote_parent=True),
             SpanRecord(new_trace_id(), new_span_id(), b"", 0, "embeddings", 5, 6, [("t", 1), ("t2", True)])]
    # Twice: the second time from the cache of encoded pairs.
    for _ in range(2):
        request = _decode(encode_traces({"service.name": "svc", "n": 2}, encode_scope("scope", "1.2"), spans,
                                        "https://opentelemetry.io/schemas/1.21.0"))
        [resource_spans] = request.resource_spans
        assert {kv.key: any_value(kv.value) for kv in resource_spans.resource.attributes} == {"service.name": "svc",
                                                                                              "n": 2}
        assert resource_spans.schema_url == "https://opentelemetry.io/schemas/1.21.0"
        [scope_spans] = resource_spans.scope_spans
        assert (scope_spans.scope.name, scope_spans.scope.version) == ("scope", "1.2")
        first, second = scope_spans.spans
        assert (first.trace_id, first.span_id, first.parent_span_id) == (trace_id, span_id, parent)
        assert (first.name, first.kind, first.start_time_unix_nano, first.end_time_unix_nano) == (
            "chat gpt-4o", 3, 1_000, 2_000)
        assert first.trace_state == "vendor=1" and first.flags == 0x301
        got = {kv.key: any_value(kv.value) for kv in first.attributes}
        assert got == {k: v for k, v in ATTRIBUTES if v is not None}
        assert [(e.name, e.time_unix_nano) for e in first.events] == [("gen_ai.first_chunk", 1_500)]
        assert (first.status.code, first.status.message) == (2, "boom")
        assert second.parent_span_id == b"" and second.status.code == 0 and second.flags == 0x100
        # True and 1 are different values, though equal to a dict.
        assert [kv.value.WhichOneof("value") for kv in second.attributes] == ["int_value", "bool_value"]


def test_traceparent() -> None:
    good = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    assert parse_traceparent(good) == (bytes.fromhex("4bf92f3577b34da6a3ce929d0e0e4736"),
                                       bytes.fromhex("00f067aa0ba902b7"), 1)
    assert format_traceparent(*parse_traceparent(good)) == good  # type: ignore[misc]
    # A later version may carry more fields; version ff, zero ids, upper case and junk are refused.
    assert parse_traceparent("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra") is not None
    for bad in ("ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", good.upper(), good + "-x",
                "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
                "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01", "garbage", "", None):
        assert parse_traceparent(bad) is None, bad


@pytest.mark.parametrize(("environ", "root", "unsampled_parent", "sampled_parent"), [
    ({}, True, False, True),
    ({"OTEL_TRACES_SAMPLER": "always_on"}, True, True, True),
    ({"OTEL_TRACES_SAMPLER": "always_off"}, False, False, False),
    ({"OTEL_TRACES_SAMPLER": "parentbased_always_off"}, False, False, True),
    ({"OTEL_TRACES_SAMPLER": "parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0"}, False, False, True),
    ({"OTEL_TRACES_SAMPLER": "bogus"}, True, False, True),
])
def test_sampler(environ: dict[str, str], root: bool, unsampled_parent: bool, sampled_parent: bool) -> None:
    sampler = Sampler.from_environment(environ)
    trace_id = new_trace_id()
    assert sampler.sampled(trace_id, None) is root
    assert sampler.sampled(trace_id, 0) is unsampled_parent
    assert sampler.sampled(trace_id, 1) is sampled_parent


def test_ratio_sampling_keeps_about_the_ratio() -> None:
    sampler = Sampler.from_environment({"OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0.25"})
    kept = sum(sampler.sampled(new_trace_id(), None) for _ in range(20_000))
    assert 4_400 < kept < 5_600
