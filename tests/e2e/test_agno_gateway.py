"""agno agents built by majordomo_frameworks.agno.create_model, through the real gateway."""

from __future__ import annotations

import pytest
from agno.agent import Agent
from majordomo_frameworks.agno import create_model

from tests.support import GatewayProcess
from tests.support.gateway import latest_rows
from tests.support.guide import MODELS, PROVIDER_KEYS
from tests.support.upstream import MockUpstream


@pytest.fixture(autouse=True)
def _env(gateway: GatewayProcess, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAJORDOMO_GATEWAY_URL", gateway.url)
    monkeypatch.setenv("MAJORDOMO_API_KEY", gateway.key)
    monkeypatch.setenv("AGNO_TELEMETRY", "false")
    for name, value in PROVIDER_KEYS.items():
        monkeypatch.setenv(name, value)


@pytest.mark.parametrize("provider", ["openai", "anthropic", "gemini"])
async def test_agno_run_is_logged_with_metadata(gateway: GatewayProcess, mock_upstream: MockUpstream,
                                                provider: str) -> None:
    mock_upstream.clear()
    model = create_model(provider, feature="agno-chat", step="answer", user_id="u-7",  # type: ignore[arg-type]
                         session_id="s-7")
    response = await Agent(model=model, instructions="Be brief.").arun("Hello!")
    assert response.content == "Hello from the mock upstream."
    seen = mock_upstream.requests[-1]
    assert seen.path == {"openai": "/v1/chat/completions", "anthropic": "/v1/messages",
                         "gemini": "/v1beta/openai/chat/completions"}[provider]
    assert not [h for h in seen.headers if h.startswith("x-majordomo-")]
    [row] = await latest_rows(gateway, 1)
    assert (row["provider"], row["model"]) == (provider, MODELS[provider])
    assert row["raw_metadata"] == {"Feature": "agno-chat", "Step": "answer", "User-Id": "u-7", "Session-Id": "s-7"}
    assert (row["input_tokens"], row["output_tokens"]) == (100, 20)
    assert row["total_cost"] is not None
