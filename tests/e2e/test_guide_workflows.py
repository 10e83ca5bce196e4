"""The guide's multi-step workflow, per-user tracking and troubleshooting, through the real gateway."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from decimal import Decimal

import orjson
import pytest
from majordomo_frameworks.pydantic_ai import AnthropicModelSettings, build_extra_headers, create_model
from pydantic_ai import Agent
from pydantic_ai.exceptions import ModelAPIError, ModelHTTPError

from tests.support import GatewayProcess, free_port
from tests.support.guide import BY_STEP, PER_USER, PROVIDER_KEYS


@pytest.fixture
def guide_env(fresh_gateway: GatewayProcess, monkeypatch: pytest.MonkeyPatch) -> GatewayProcess:
    monkeypatch.setenv("MAJORDOMO_GATEWAY_URL", fresh_gateway.url)
    monkeypatch.setenv("MAJORDOMO_API_KEY", fresh_gateway.key)
    for name, value in PROVIDER_KEYS.items():
        monkeypatch.setenv(name, value)
    return fresh_gateway


def usage(input_tokens: int, output_tokens: int) -> dict[str, str]:
    return {"X-Mock-Usage": orjson.dumps({"input_tokens": input_tokens, "output_tokens": output_tokens}).decode()}


def sonnet(input_tokens: int, output_tokens: int) -> Decimal:
    return (Decimal(input_tokens) * 3 + Decimal(output_tokens) * 15) / 1_000_000


@pytest.mark.parametrize("fresh_gateway", ["sqlite", "postgres"], indirect=True)
async def test_multi_step_workflow_and_per_user_queries(guide_env: GatewayProcess) -> None:
    query_agent = Agent(model=create_model("anthropic"), system_prompt="Generate queries.")
    synthesis_agent = Agent(model=create_model("anthropic"), system_prompt="Synthesize.")

    # The guide's research_workflow, twice, with known usage per step.
    step_costs: dict[str, list[Decimal]] = defaultdict(list)
    for topic, (q_in, q_out), (s_in, s_out) in [("llms", (1000, 200), (5000, 800)),
                                                 ("gateways", (1500, 100), (7000, 900))]:
        await query_agent.run(topic, model_settings=AnthropicModelSettings(
            extra_headers=build_extra_headers(feature="research", step="query-gen",
                                              extra_headers=usage(q_in, q_out))))
        step_costs["query-gen"].append(sonnet(q_in, q_out))
        await synthesis_agent.run("results", model_settings=AnthropicModelSettings(
            extra_headers=build_extra_headers(feature="research", step="synthesis",
                                              extra_headers=usage(s_in, s_out))))
        step_costs["synthesis"].append(sonnet(s_in, s_out))

    # The guide's per-user example.
    chat_agent = Agent(model=create_model("anthropic"), system_prompt="Chat.")
    user_costs: dict[str, Decimal] = defaultdict(Decimal)
    user_requests: dict[str, int] = defaultdict(int)
    for user_id, session_id, (tokens_in, tokens_out) in [("u-1", "s-1", (800, 80)), ("u-2", "s-2", (300, 30)),
                                                        ("u-1", "s-3", (900, 90))]:
        headers = build_extra_headers(feature="chat-bot", user_id=user_id, session_id=session_id,
                                      extra_headers=usage(tokens_in, tokens_out))
        await chat_agent.run("hi", model_settings=AnthropicModelSettings(extra_headers=headers))
        user_costs[user_id] += sonnet(tokens_in, tokens_out)
        user_requests[user_id] += 1

    for _ in range(100):
        if await guide_env.count_rows() == 7:
            break
        await asyncio.sleep(0.05)
    assert await guide_env.count_rows() == 7

    per_user = await guide_env.query(PER_USER)
    assert [(u, n) for u, n, _ in per_user] == [("u-1", 2), ("u-2", 1)]
    for user_id, requests, total in per_user:
        assert requests == user_requests[user_id]
        assert Decimal(str(total)) == pytest.approx(user_costs[user_id], abs=Decimal("1e-9"))

    by_step = {step: (avg, total) for step, avg, total in await guide_env.query(BY_STEP)}
    assert set(by_step) == {"query-gen", "synthesis"}
    for step, costs in step_costs.items():
        avg, total = by_step[step]
        assert Decimal(str(total)) == pytest.approx(sum(costs), abs=Decimal("1e-9"))
        assert Decimal(str(avg)) == pytest.approx(sum(costs) / 2, abs=Decimal("1e-9"))


def test_missing_majordomo_api_key_raises_the_guides_message(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MAJORDOMO_API_KEY", raising=False)
    monkeypatch.setenv("ANTHROPIC_API_KEY", PROVIDER_KEYS["ANTHROPIC_API_KEY"])
    with pytest.raises(ValueError, match=r"^MAJORDOMO_API_KEY environment variable is required$"):
        create_model("anthropic")


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
async def test_gateway_down_is_a_connection_error(monkeypatch: pytest.MonkeyPatch, provider: str) -> None:
    monkeypatch.setenv("MAJORDOMO_GATEWAY_URL", f"http://127.0.0.1:{free_port()}")  # nothing listens there
    monkeypatch.setenv("MAJORDOMO_API_KEY", "mdm_sk_" + "z" * 43)
    for name, value in PROVIDER_KEYS.items():
        monkeypatch.setenv(name, value)
    model = create_model(provider)  # type: ignore[arg-type]
    model.client.max_retries = 0  # type: ignore[union-attr]
    agent = Agent(model=model)
    with pytest.raises(ModelAPIError) as info:
        await agent.run("Hello!")
    assert "connection" in str(info.value).lower()


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
async def test_wrong_key_is_a_401_carrying_our_message(gateway: GatewayProcess, monkeypatch: pytest.MonkeyPatch,
                                                      provider: str) -> None:
    monkeypatch.setenv("MAJORDOMO_GATEWAY_URL", gateway.url)
    monkeypatch.setenv("MAJORDOMO_API_KEY", "mdm_sk_" + "w" * 43)
    for name, value in PROVIDER_KEYS.items():
        monkeypatch.setenv(name, value)
    agent = Agent(model=create_model(provider))  # type: ignore[arg-type]
    with pytest.raises(ModelHTTPError) as info:
        await agent.run("Hello!")
    assert info.value.status_code == 401
    assert "Invalid X-Majordomo-Key" in str(info.value.body)
