"""A pydantic-ai agent instrumented with OpenTelemetry sees the gateway's span, with its cost, inside
its agent run: real agent → real gateway (OTLP on) → mock upstream, both processes exporting to one
real OTLP/HTTP receiver, which joins the trace by parent ids as any backend (Logfire, Jaeger) does."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from majordomo_frameworks.pydantic_ai import OpenAIChatModelSettings, build_extra_headers, create_model
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.instrumentation.httpx import HTTPX2ClientInstrumentor, HTTPXClientInstrumentor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from pydantic_ai import Agent
from pydantic_ai.models.instrumented import InstrumentationSettings

from tests.support import GatewayProcess
from tests.support.gateway import latest_rows
from tests.support.guide import PROVIDER_KEYS
from tests.support.otlp import OtlpReceiver, ReceivedSpan, http_receiver


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    yield from http_receiver()


@pytest.fixture
def traced_gateway(mock_upstream: Any, tmp_path: Path, receiver: OtlpReceiver,
                   monkeypatch: pytest.MonkeyPatch) -> Iterator[GatewayProcess]:
    gw = GatewayProcess(database_url=f"sqlite:///{tmp_path / 'majordomo.db'}", upstream_url=mock_upstream.url,
                        workdir=tmp_path, extra_env={"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
                                                     "OTEL_BSP_SCHEDULE_DELAY": "50"}).start()
    monkeypatch.setenv("MAJORDOMO_GATEWAY_URL", gw.url)
    monkeypatch.setenv("MAJORDOMO_API_KEY", gw.key)
    for name, value in PROVIDER_KEYS.items():
        monkeypatch.setenv(name, value)
    yield gw
    gw.stop()


@pytest.fixture
def app_tracing(receiver: OtlpReceiver) -> Iterator[TracerProvider]:
    """The agent's side: pydantic-ai's instrumentation plus the HTTP client's, which sends traceparent
    (what ``logfire.instrument_httpx()`` does).  pydantic-ai 2 talks through httpx2, the openai SDK
    before it through httpx: both are instrumented."""
    provider = TracerProvider(resource=Resource.create({"service.name": "agent-app"}))
    provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=f"{receiver.endpoint}/v1/traces")))
    instrumentors = [HTTPXClientInstrumentor(), HTTPX2ClientInstrumentor()]
    for instrumentor in instrumentors:
        instrumentor.instrument(tracer_provider=provider)
    try:
        yield provider
    finally:
        for instrumentor in instrumentors:
            instrumentor.uninstrument()
        provider.shutdown()


def _instrumented_agent(provider: TracerProvider) -> Agent[None, str]:
    settings = InstrumentationSettings(tracer_provider=provider)
    try:  # pydantic-ai 2: a capability
        from pydantic_ai.capabilities import Instrumentation
    except ImportError:  # pydantic-ai 1
        return Agent(model=create_model("openai"), system_prompt="You are helpful.", instrument=settings)
    return Agent(model=create_model("openai"), system_prompt="You are helpful.",
                 capabilities=[Instrumentation(settings=settings)])


def _ancestors(span: ReceivedSpan, spans: list[ReceivedSpan]) -> list[ReceivedSpan]:
    by_id = {s.span_id: s for s in spans}
    chain, current = [], span
    while current.parent_span_id and current.parent_span_id in by_id:
        current = by_id[current.parent_span_id]
        chain.append(current)
    return chain


@pytest.mark.parametrize("streamed", [False, True], ids=["run", "run_stream"])
async def test_the_gateway_span_is_inside_the_agent_run(traced_gateway: GatewayProcess, receiver: OtlpReceiver,
                                                        app_tracing: TracerProvider, streamed: bool) -> None:
    agent = _instrumented_agent(app_tracing)
    settings = OpenAIChatModelSettings(extra_headers=build_extra_headers(feature="tracing", user_id="u-1"))
    if streamed:
        async with agent.run_stream("Hello!", model_settings=settings) as result:
            output = await result.get_output()
    else:
        output = (await agent.run("Hello!", model_settings=settings)).output
    assert output == "Hello from the mock upstream."
    [row] = await latest_rows(traced_gateway, 1)
    gateway_span = receiver.span_for(str(row["id"]))
    app_tracing.force_flush()

    def joined(r: OtlpReceiver) -> bool:
        chain = _ancestors(gateway_span, r.spans)
        return bool(chain) and not chain[-1].parent_span_id  # reaches the app's root span

    receiver.wait_for(joined)
    chain = _ancestors(gateway_span, receiver.spans)
    assert gateway_span.resource["service.name"] == "majordomo-gateway"
    assert {s.resource["service.name"] for s in chain} == {"agent-app"}
    # httpx's span (the request to the gateway), pydantic-ai's model request, the agent run.
    assert chain[0].attributes.get("http.request.method", chain[0].attributes.get("http.method")) == "POST"
    assert any(s.name == "chat gpt-4o" for s in chain), [s.name for s in chain]
    root = chain[-1]
    assert "agent" in root.name or root.attributes.get("gen_ai.operation.name") == "invoke_agent", root.name
    assert {s.trace_id for s in (gateway_span, *chain)} == {root.trace_id}
    a = gateway_span.attributes
    assert a["majordomo.cost_usd"] == pytest.approx(float(row["total_cost"])) and a["majordomo.cost_usd"] > 0
    assert (a["gen_ai.usage.input_tokens"], a["gen_ai.usage.output_tokens"]) == (row["input_tokens"],
                                                                               row["output_tokens"])
    assert a["gen_ai.request.model"] == "gpt-4o" and a["majordomo.streamed"] is streamed
    assert a["majordomo.metadata.Feature"] == "tracing" and a["majordomo.metadata.User-Id"] == "u-1"
    if streamed:
        assert a["majordomo.time_to_first_chunk_ms"] > 0
