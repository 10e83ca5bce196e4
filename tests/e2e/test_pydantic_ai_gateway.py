"""The guide, end to end: real pydantic-ai agents built by create_model → real gateway → mock upstream.

Every test runs on SQLite and on PostgreSQL (the ``gateway`` fixture is parametrised).
"""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal

import orjson
import pytest
from majordomo_frameworks.pydantic_ai import (
    AnthropicModelSettings,
    OpenAIChatModelSettings,
    build_extra_headers,
    build_extra_headers_gemini,
    create_model,
)
from pydantic import BaseModel
from pydantic_ai import Agent

from tests.support import GatewayProcess
from tests.support.gateway import latest_rows
from tests.support.guide import MODELS, PROVIDER_KEYS
from tests.support.upstream import MockUpstream

ROW_PROVIDER = {"openai": "openai", "anthropic": "anthropic", "gemini": "gemini"}


@pytest.fixture
def env(gateway: GatewayProcess, monkeypatch: pytest.MonkeyPatch) -> Iterator[GatewayProcess]:
    monkeypatch.setenv("MAJORDOMO_GATEWAY_URL", gateway.url)
    monkeypatch.setenv("MAJORDOMO_API_KEY", gateway.key)
    for name, value in PROVIDER_KEYS.items():
        monkeypatch.setenv(name, value)
    yield gateway


def settings_for(provider: str, headers: dict[str, str], **extra: object):  # type: ignore[no-untyped-def]
    if provider == "anthropic":
        return AnthropicModelSettings(extra_headers=headers, **extra)  # type: ignore[typeddict-item]
    return OpenAIChatModelSettings(extra_headers=headers, **extra)  # type: ignore[typeddict-item]


def headers_for(provider: str, **metadata: str) -> dict[str, str]:
    if provider == "gemini":
        return build_extra_headers_gemini(**metadata)
    return build_extra_headers(**metadata)


@pytest.mark.parametrize("provider", ["openai", "anthropic", "gemini"])
async def test_agent_run_is_logged_with_metadata(env: GatewayProcess, mock_upstream: MockUpstream,
                                                 provider: str) -> None:
    mock_upstream.clear()
    agent = Agent(model=create_model(provider), system_prompt="You are helpful.")  # type: ignore[arg-type]
    result = await agent.run("Hello!", model_settings=settings_for(provider, headers_for(
        provider, feature="chat", step="main", user_id="user-123", session_id="sess-9")))
    assert result.output == "Hello from the mock upstream."
    [seen] = mock_upstream.requests
    assert not [h for h in seen.headers if h.startswith("x-majordomo-")]
    expected_path = {"openai": "/v1/chat/completions", "anthropic": "/v1/messages",
                     "gemini": "/v1beta/openai/chat/completions"}[provider]
    assert seen.path == expected_path
    [row] = await latest_rows(env, 1)
    assert (row["provider"], row["model"]) == (ROW_PROVIDER[provider], MODELS[provider])
    assert row["raw_metadata"] == {"Feature": "chat", "Step": "main", "User-Id": "user-123",
                                   "Session-Id": "sess-9"}
    assert (row["input_tokens"], row["output_tokens"]) == (100, 20)
    assert row["total_cost"] is not None and Decimal(str(row["total_cost"])) > 0
    assert row["status_code"] == 200 and row["usage_source"] == "reported"


@pytest.mark.parametrize("provider", ["openai", "anthropic", "gemini"])
async def test_agent_run_stream(env: GatewayProcess, mock_upstream: MockUpstream, provider: str) -> None:
    agent = Agent(model=create_model(provider), system_prompt="You are helpful.")  # type: ignore[arg-type]
    async with agent.run_stream("Hello!", model_settings=settings_for(
            provider, headers_for(provider, feature="streaming"))) as result:
        output = await result.get_output()
    assert output == "Hello from the mock upstream."
    [row] = await latest_rows(env, 1)
    assert row["streamed"] is True and row["aborted"] is False
    assert (row["provider"], row["input_tokens"], row["output_tokens"]) == (ROW_PROVIDER[provider], 100, 20)
    assert row["raw_metadata"]["Feature"] == "streaming"
    assert row["total_cost"] is not None


@pytest.mark.parametrize("provider", ["openai", "anthropic", "gemini"])
async def test_tool_calling_agent(env: GatewayProcess, mock_upstream: MockUpstream, provider: str) -> None:
    agent = Agent(model=create_model(provider), system_prompt="Use the tool.")  # type: ignore[arg-type]
    calls: list[str] = []

    @agent.tool_plain
    def lookup_weather(city: str) -> str:
        calls.append(city)
        return f"Sunny in {city}"

    result = await agent.run("What is the weather? [mock:tool-call]",
                             model_settings=settings_for(provider, headers_for(provider, feature="tools")))
    assert calls, "the mock asked for the tool and pydantic-ai called it"
    assert isinstance(result.output, str)
    rows = await latest_rows(env, 2)
    assert [r["raw_metadata"]["Feature"] for r in rows] == ["tools", "tools"]
    assert all(r["provider"] == ROW_PROVIDER[provider] and r["total_cost"] is not None for r in rows)


class CityInfo(BaseModel):
    city: str
    population: int


@pytest.mark.parametrize("provider", ["openai", "anthropic", "gemini"])
async def test_structured_output_agent(env: GatewayProcess, provider: str) -> None:
    agent = Agent(model=create_model(provider), output_type=CityInfo)  # type: ignore[arg-type]
    result = await agent.run("Tell me about Paris.",
                             model_settings=settings_for(provider, headers_for(provider, feature="structured")))
    assert isinstance(result.output, CityInfo)
    [row] = await latest_rows(env, 1)
    # Inside an agent run, Step and Session-Id default to the agent's name and the run id.
    assert row["raw_metadata"] == {"Feature": "structured", "Step": "agent", "Session-Id": result.run_id}


@pytest.mark.parametrize("provider", ["openai", "anthropic", "gemini"])
async def test_key_is_sent_even_without_model_settings(env: GatewayProcess, mock_upstream: MockUpstream,
                                                       provider: str) -> None:
    """The guide's "Headers not being sent" trap: create_model sends the key regardless."""
    agent = Agent(model=create_model(provider))  # type: ignore[arg-type]
    result = await agent.run("prompt")
    assert result.output == "Hello from the mock upstream."
    [row] = await latest_rows(env, 1)
    assert row["majordomo_api_key_id"] == env.key_id
    assert row["raw_metadata"] == {"Step": "agent", "Session-Id": result.run_id}


async def test_no_default_metadata_with_auto_false(env: GatewayProcess) -> None:
    from majordomo_frameworks import tag

    agent = Agent(model=create_model("openai"))
    with tag(auto=False):
        await agent.run("prompt")
    [row] = await latest_rows(env, 1)
    assert row["raw_metadata"] == {}


async def test_anthropic_settings_reach_upstream_intact(env: GatewayProcess, mock_upstream: MockUpstream) -> None:
    """The guide's "Keeping Your Model Settings" example with extended thinking and prompt caching."""
    model = create_model("anthropic", "claude-opus-4-5-20251101")
    agent = Agent(model=model, system_prompt="You are a research assistant.")

    @agent.tool_plain
    def search(query: str) -> str:
        return f"results for {query}"

    usage = {"input_tokens": 50_000, "output_tokens": 2_000, "cached_tokens": 30_000,
             "cache_creation_tokens": 15_000, "cache_creation_1h_tokens": 5_000}
    settings = AnthropicModelSettings(
        max_tokens=64000,
        anthropic_thinking={"type": "enabled", "budget_tokens": 32000},
        anthropic_cache_instructions=True,
        anthropic_cache_tool_definitions="1h",
        anthropic_cache_messages=True,
        parallel_tool_calls=True,
        timeout=10 * 60,
        extra_headers={
            "anthropic-beta": "interleaved-thinking-2025-05-14",
            **build_extra_headers(feature="research-agent", step="analysis", user_id="user-123",
                                  extra_headers={"X-Mock-Usage": orjson.dumps(usage).decode()}),
        },
    )
    mock_upstream.clear()
    result = await agent.run("Analyze this data...", model_settings=settings)
    [seen] = mock_upstream.requests
    body = seen.json()
    assert body["max_tokens"] == 64000
    assert body["thinking"] == {"type": "enabled", "budget_tokens": 32000}
    assert body["system"][-1]["cache_control"]["type"] == "ephemeral"
    assert body["tools"][-1]["cache_control"] == {"type": "ephemeral", "ttl": "1h"}
    assert any("cache_control" in block for block in body["messages"][-1]["content"])
    assert seen.headers["anthropic-beta"].startswith("interleaved-thinking-2025-05-14")
    assert not [h for h in seen.headers if h.startswith("x-majordomo-")]

    [row] = await latest_rows(env, 1)
    assert (row["model"], row["input_tokens"], row["output_tokens"]) == ("claude-opus-4-5-20251101", 50_000, 2_000)
    assert (row["cached_tokens"], row["cache_creation_tokens"], row["cache_creation_1h_tokens"]) == (
        30_000, 15_000, 5_000)
    assert row["raw_metadata"] == {"Feature": "research-agent", "Step": "analysis", "User-Id": "user-123",
                                   "Session-Id": result.run_id}
    # Claude Opus 4.5: $5 input, $0.50 cache read, $6.25 5-minute write, $10 1-hour write, $25 output /MTok.
    expected = (Decimal(5_000) * 5 + Decimal(30_000) * Decimal("0.5") + Decimal(10_000) * Decimal("6.25")
                + Decimal(5_000) * 10 + Decimal(2_000) * 25) / 1_000_000
    assert Decimal(str(row["total_cost"])).quantize(Decimal("1e-9")) == expected.quantize(Decimal("1e-9"))


async def test_openai_reasoning_tokens_are_logged(env: GatewayProcess) -> None:
    agent = Agent(model=create_model("openai", "o4-mini"))
    usage = {"input_tokens": 400, "output_tokens": 900, "reasoning_tokens": 700}
    await agent.run("Think.", model_settings=OpenAIChatModelSettings(extra_headers=build_extra_headers(
        feature="reasoning", extra_headers={"X-Mock-Usage": orjson.dumps(usage).decode()})))
    [row] = await latest_rows(env, 1)
    assert (row["model"], row["output_tokens"], row["reasoning_tokens"]) == ("o4-mini", 900, 700)
    # o4-mini: $1.10 input, $4.40 output per million tokens; reasoning is billed as output.
    expected = (Decimal(400) * Decimal("1.10") + Decimal(900) * Decimal("4.40")) / 1_000_000
    assert Decimal(str(row["total_cost"])).quantize(Decimal("1e-9")) == expected.quantize(Decimal("1e-9"))


async def test_gemini_with_plain_build_extra_headers_still_routes_to_gemini(
        env: GatewayProcess, mock_upstream: MockUpstream) -> None:
    """The original guide warned this fails; create_model("gemini") now sends the route header itself."""
    mock_upstream.clear()
    agent = Agent(model=create_model("gemini"))
    await agent.run("Hello!", model_settings=OpenAIChatModelSettings(
        extra_headers=build_extra_headers(feature="my-feature")))
    assert mock_upstream.requests[-1].path == "/v1beta/openai/chat/completions"
    [row] = await latest_rows(env, 1)
    assert (row["provider"], row["route"]) == ("gemini", "gemini-openai")


async def test_gemini_without_the_route_header_fails_clearly(env: GatewayProcess) -> None:
    """The guide's troubleshooting case, for a model not built by create_model: a clear 400, not a silent
    misroute to OpenAI."""
    from pydantic_ai.exceptions import ModelHTTPError
    from pydantic_ai.models.openai import OpenAIChatModel
    from pydantic_ai.providers.openai import OpenAIProvider

    model = OpenAIChatModel("gemini-2.0-flash", provider=OpenAIProvider(
        base_url=f"{env.url}/v1", api_key=PROVIDER_KEYS["GEMINI_API_KEY"]))
    agent = Agent(model=model)
    with pytest.raises(ModelHTTPError) as info:
        await agent.run("Hello!", model_settings=OpenAIChatModelSettings(
            extra_headers=build_extra_headers(feature="my-feature")))
    assert info.value.status_code == 400
    assert "build_extra_headers_gemini" in str(info.value.body)
