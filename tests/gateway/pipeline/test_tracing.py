"""OpenTelemetry in-process: the GenAI span of each request and the GenAI metrics, as a real OTLP/HTTP
receiver on loopback decodes them."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from majordomo_gateway.proxy.upstream import UpstreamConnectError

from tests.support.otlp import OtlpReceiver, http_receiver
from tests.support.processes import REPO

CHAT = b'{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}'
STREAM = b'{"model":"gpt-4o-mini","stream":true,"stream_options":{"include_usage":true},"messages":[]}'
MODEL = "gpt-4o-mini-2024-07-18"
ANSWER = orjson.dumps({
    "id": "chatcmpl-abc123", "object": "chat.completion", "model": MODEL,
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello"}, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 100, "completion_tokens": 40, "total_tokens": 140,
              "prompt_tokens_details": {"cached_tokens": 30}, "completion_tokens_details": {"reasoning_tokens": 12}},
})
CALLER_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"
SPAN_KIND_CLIENT = 3
STATUS_ERROR = 2


def _chunk(**fields: Any) -> bytes:
    base = {"id": "chatcmpl-s1", "object": "chat.completion.chunk", "model": MODEL}
    return b"data: " + orjson.dumps(base | fields) + b"\n\n"


STREAM_EVENTS = [
    _chunk(choices=[{"index": 0, "delta": {"role": "assistant", "content": "Hel"}, "finish_reason": None}]),
    _chunk(choices=[{"index": 0, "delta": {"content": "lo"}, "finish_reason": "length"}]),
    _chunk(choices=[], usage={"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}),
    b"data: [DONE]\n\n",
]


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    yield from http_receiver()


@pytest.fixture(autouse=True)
def otel_env(receiver: OtlpReceiver, monkeypatch: pytest.MonkeyPatch) -> None:
    """Before the gateway is built (autouse fixtures come first)."""
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint)
    monkeypatch.setenv("OTEL_SERVICE_NAME", "majordomo-under-test")
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "50")
    monkeypatch.setenv("OTEL_METRIC_EXPORT_INTERVAL", "200")


@pytest.mark.parametrize("in_process", [{"log.format": "json"}], indirect=True)
async def test_a_span_per_request_child_of_the_callers(in_process: Any, canned: Any, receiver: OtlpReceiver,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    in_process.upstream.answers.append(canned.json(ANSWER))
    with caplog.at_level(logging.INFO, logger="majordomo.access"):
        reply = await in_process.post("/v1/chat/completions", CHAT,
                                      (b"traceparent", f"00-{CALLER_TRACE}-{CALLER_SPAN}-01".encode()),
                                      (b"x-majordomo-feature", b"faq"), (b"x-majordomo-user-id", b"u-7"))
    assert reply.status == 200
    request_id = reply.headers[b"x-majordomo-request-id"].decode()
    row = await in_process.row(request_id.encode())
    span = receiver.span_for(request_id)
    assert span.name == "chat gpt-4o-mini"
    assert (span.trace_id, span.parent_span_id, span.kind) == (CALLER_TRACE, CALLER_SPAN, SPAN_KIND_CLIENT)
    assert span.resource["service.name"] == "majordomo-under-test"
    a = span.attributes
    assert a["gen_ai.operation.name"] == "chat" and a["gen_ai.provider.name"] == "openai"
    assert (a["gen_ai.request.model"], a["gen_ai.response.model"]) == ("gpt-4o-mini", MODEL)
    assert a["gen_ai.response.id"] == "chatcmpl-abc123" and a["gen_ai.response.finish_reasons"] == ["stop"]
    assert (a["gen_ai.usage.input_tokens"], a["gen_ai.usage.output_tokens"]) == (100, 40)
    assert a["gen_ai.usage.cache_read.input_tokens"] == 30 and a["gen_ai.usage.cache_creation.input_tokens"] == 0
    assert a["gen_ai.usage.reasoning.output_tokens"] == 12
    assert a["majordomo.cost_usd"] == pytest.approx(float(row["total_cost"])) and a["majordomo.cost_usd"] > 0
    assert a["majordomo.metadata.Feature"] == "faq" and a["majordomo.metadata.User-Id"] == "u-7"
    # The span covers the request: from its arrival to its row.
    assert (span.end_ns - span.start_ns) / 1e6 >= row["response_time_ms"] * 0.99
    # The upstream got this span's context, not the caller's.
    [sent] = in_process.upstream.requests
    forwarded = [v for k, v in sent.headers if k.lower() == "traceparent"]
    assert forwarded == [f"00-{CALLER_TRACE}-{span.span_id}-01"]
    # The access-log line names the trace and span.
    [line] = [r for r in caplog.records if r.name == "majordomo.access"]
    assert (line.fields["trace_id"], line.fields["span_id"]) == (CALLER_TRACE, span.span_id)  # type: ignore[attr-defined]


async def test_a_stream_span_ends_with_the_stream(in_process: Any, canned: Any, receiver: OtlpReceiver) -> None:
    in_process.upstream.answers.append(canned.sse(STREAM_EVENTS))
    reply = await in_process.post("/v1/chat/completions", STREAM)
    assert reply.status == 200 and reply.complete
    request_id = reply.headers[b"x-majordomo-request-id"].decode()
    row = await in_process.row(request_id.encode())
    span = receiver.span_for(request_id)
    assert span.parent_span_id == ""  # no traceparent came in: a root span
    a = span.attributes
    assert a["majordomo.streamed"] is True and a["gen_ai.response.finish_reasons"] == ["length"]
    assert a["gen_ai.response.id"] == "chatcmpl-s1"
    assert a["majordomo.time_to_first_chunk_ms"] == pytest.approx(row["time_to_first_token_ms"])
    [(event, at)] = span.events
    assert event == "gen_ai.first_chunk" and span.start_ns < at <= span.end_ns
    assert (span.end_ns - span.start_ns) / 1e6 >= row["response_time_ms"] * 0.99


async def test_failures_are_error_spans(in_process: Any, receiver: OtlpReceiver) -> None:
    in_process.upstream.answers.append(UpstreamConnectError("connection refused"))
    reply = await in_process.post("/v1/chat/completions", CHAT)
    assert reply.status == 502
    span = receiver.span_for(reply.headers[b"x-majordomo-request-id"].decode())
    assert span.status_code == STATUS_ERROR and span.attributes["error.type"] == "unreachable"
    assert span.attributes["http.response.status_code"] == 502


async def test_genai_client_metrics(in_process: Any, canned: Any, receiver: OtlpReceiver) -> None:
    in_process.upstream.answers += [canned.json(ANSWER), canned.json(ANSWER)]
    for _ in range(2):
        assert (await in_process.post("/v1/chat/completions", CHAT)).status == 200

    def exported(r: OtlpReceiver) -> bool:
        return any(p.metric == "gen_ai.client.operation.duration" and p.count >= 2 for p in r.points)

    receiver.wait_for(exported)
    tokens = {p.attributes["gen_ai.token.type"]: p for p in receiver.points if p.metric == "gen_ai.client.token.usage"
              and p.count >= 2}
    assert tokens["input"].sum == 200 and tokens["output"].sum == 80 and tokens["input"].unit == "{token}"
    duration = next(p for p in receiver.points if p.metric == "gen_ai.client.operation.duration" and p.count >= 2)
    assert duration.unit == "s" and duration.attributes["gen_ai.response.model"] == MODEL
    assert duration.attributes["gen_ai.operation.name"] == "chat"


OFF_SCRIPT = r"""
import asyncio, sys, tempfile, uuid
from datetime import UTC, datetime
from majordomo_gateway.app import Gateway
from majordomo_gateway.auth.keys import display_prefix, generate_key, hash_secret
from majordomo_gateway.config import load_settings
from majordomo_gateway.proxy.upstream import UpstreamConnectError

class Down:
    async def request(self, *args):
        raise UpstreamConnectError("down")
    async def close(self):
        pass

async def main():
    tmp = tempfile.mkdtemp()
    settings = load_settings(None, environ={}, database_url=f"sqlite:///{tmp}/m.db",
                             **{"writer.spool_dir": f"{tmp}/spool"})
    gateway = Gateway(settings, upstream=Down())
    await gateway.startup()
    key = generate_key()
    await gateway.database.create_key(str(uuid.uuid4()), "k", None, hash_secret(key), display_prefix(key),
                                      datetime.now(UTC))
    sent = []
    async def receive():
        return {"type": "http.request", "body": b'{"model":"gpt-4o"}', "more_body": False}
    async def send(message):
        sent.append(message)
    scope = {"type": "http", "method": "POST", "path": "/v1/chat/completions", "raw_path": b"/v1/chat/completions",
             "query_string": b"", "headers": [(b"x-majordomo-key", key.encode()),
             (b"traceparent", b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")]}
    await gateway(scope, receive, send)
    await gateway.shutdown()
    assert sent[0]["status"] == 502, sent[0]
    print(gateway.tracing, sorted(m for m in sys.modules if m.startswith("opentelemetry")))

asyncio.run(main())
"""


def test_off_imports_nothing_of_opentelemetry() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "MAJORDOMO_"))}
    done = subprocess.run([sys.executable, "-c", OFF_SCRIPT], env=env, cwd=REPO, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "None []"
    # And the same script with a collector configured does import it: the check can fail.
    on = subprocess.run([sys.executable, "-c", OFF_SCRIPT], env={**env, "OTEL_EXPORTER_OTLP_ENDPOINT":
                        "http://127.0.0.1:9"}, cwd=REPO, capture_output=True, text=True, timeout=60)
    assert on.returncode == 0, on.stderr
    assert "opentelemetry.sdk.resources" in on.stdout


async def test_an_unsampled_caller_gets_no_span_but_its_trace_goes_on(in_process: Any, canned: Any,
                                                                    receiver: OtlpReceiver) -> None:
    in_process.upstream.answers += [canned.json(ANSWER), canned.json(ANSWER)]
    quiet = await in_process.post("/v1/chat/completions", CHAT,
                                  (b"traceparent", f"00-{CALLER_TRACE}-{CALLER_SPAN}-00".encode()))
    loud = await in_process.post("/v1/chat/completions", CHAT)
    receiver.span_for(loud.headers[b"x-majordomo-request-id"].decode())  # exported in the same batch or after
    quiet_id = quiet.headers[b"x-majordomo-request-id"].decode()
    assert not [s for s in receiver.spans if s.attributes.get("majordomo.request_id") == quiet_id]
    forwarded = dict(in_process.upstream.requests[0].headers)["traceparent"]
    assert forwarded.startswith(f"00-{CALLER_TRACE}-") and forwarded.endswith("-00")
