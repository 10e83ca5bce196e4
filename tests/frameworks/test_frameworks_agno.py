"""majordomo_frameworks.agno: unit tests, and wire tests of real agno agents against the fake gateway."""

from __future__ import annotations

import asyncio
import re

import pytest

pytest.importorskip("agno")

from agno.agent import Agent
from agno.models.anthropic import Claude
from agno.models.openai import OpenAIChat, OpenAILike
from frameworks_fake_gateway import REPLY_TEXT, FakeGateway, RecordedRequest
from frameworks_test_env import MAJORDOMO_KEY, PROVIDER_KEYS
from majordomo_frameworks import MissingEnvironmentVariableError
from majordomo_frameworks.agno import create_model


def auth_value(request: RecordedRequest) -> str | None:
    if (api_key := request.header("x-api-key")) is not None:
        return api_key
    return (request.header("authorization") or "").removeprefix("Bearer ") or None


def assert_single(request: RecordedRequest, name: str, value: str) -> None:
    assert request.header(name) == value, request.majordomo_headers()
    assert request.header_count(name) == 1, f"{name} sent {request.header_count(name)} times"


class TestCreateModel:
    def test_openai(self, gateway_env: FakeGateway) -> None:
        model = create_model("openai", feature="chat")
        assert isinstance(model, OpenAIChat) and not isinstance(model, OpenAILike)
        assert model.id == "gpt-4o"
        assert model.base_url == f"{gateway_env.url}/v1"
        assert model.api_key == PROVIDER_KEYS["OPENAI_API_KEY"]
        assert model.default_headers == {"X-Majordomo-Key": MAJORDOMO_KEY, "X-Majordomo-Feature": "chat"}

    def test_gemini(self, gateway_env: FakeGateway) -> None:
        model = create_model("gemini")
        assert isinstance(model, OpenAILike)
        assert model.id == "gemini-2.0-flash"
        assert model.base_url == f"{gateway_env.url}/v1"
        assert model.api_key == PROVIDER_KEYS["GEMINI_API_KEY"]
        assert model.default_headers == {
            "X-Majordomo-Key": MAJORDOMO_KEY,
            "X-Majordomo-Provider": "gemini-openai",
        }

    def test_anthropic(self, gateway_env: FakeGateway) -> None:
        model = create_model("anthropic", "claude-opus-4-5-20251101", step="plan", session_id=3)
        assert isinstance(model, Claude)
        assert model.id == "claude-opus-4-5-20251101"
        assert model.api_key == PROVIDER_KEYS["ANTHROPIC_API_KEY"]
        assert model.client_params == {"base_url": gateway_env.url}
        assert model.default_headers == {
            "X-Majordomo-Key": MAJORDOMO_KEY,
            "X-Majordomo-Step": "plan",
            "X-Majordomo-Session-Id": "3",
        }

    def test_unknown_provider(self, gateway_env: FakeGateway) -> None:
        with pytest.raises(ValueError, match=re.escape("Valid providers: 'openai', 'anthropic', 'gemini'")):
            create_model("bedrock")  # type: ignore[call-overload]

    @pytest.mark.parametrize(
        ("provider", "variable"),
        [("openai", "OPENAI_API_KEY"), ("anthropic", "ANTHROPIC_API_KEY"), ("gemini", "GEMINI_API_KEY")],
    )
    def test_missing_provider_key(
        self, gateway_env: FakeGateway, monkeypatch: pytest.MonkeyPatch, provider: str, variable: str
    ) -> None:
        monkeypatch.delenv(variable)
        with pytest.raises(MissingEnvironmentVariableError, match=variable):
            create_model(provider)  # type: ignore[call-overload]

    def test_missing_majordomo_key(self, gateway_env: FakeGateway, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.delenv("MAJORDOMO_API_KEY")
        with pytest.raises(ValueError, match=r"^MAJORDOMO_API_KEY environment variable is required$"):
            create_model("openai")


@pytest.mark.parametrize(
    ("provider", "path", "key_variable", "model_id"),
    [
        ("anthropic", "/v1/messages", "ANTHROPIC_API_KEY", "claude-sonnet-4-20250514"),
        ("openai", "/v1/chat/completions", "OPENAI_API_KEY", "gpt-4o"),
        ("gemini", "/v1/chat/completions", "GEMINI_API_KEY", "gemini-2.0-flash"),
    ],
)
def test_agent_run_through_gateway(
    gateway_env: FakeGateway, provider: str, path: str, key_variable: str, model_id: str
) -> None:
    model = create_model(provider, feature="agno-chat", step="main", user_id="user-1")  # type: ignore[call-overload]
    agent = Agent(model=model, instructions="You are helpful.", telemetry=False)
    result = agent.run("Hello!")
    assert result.content == REPLY_TEXT
    request = gateway_env.last()
    assert request.path == path
    assert request.body["model"] == model_id
    assert auth_value(request) == PROVIDER_KEYS[key_variable]
    assert_single(request, "X-Majordomo-Key", MAJORDOMO_KEY)
    assert_single(request, "X-Majordomo-Feature", "agno-chat")
    assert_single(request, "X-Majordomo-Step", "main")
    assert_single(request, "X-Majordomo-User-Id", "user-1")
    if provider == "gemini":
        assert_single(request, "X-Majordomo-Provider", "gemini-openai")
        # Gemini's OpenAI-compatible API takes the system role, not OpenAI's newer "developer" role.
        assert [message["role"] for message in request.body["messages"]] == ["system", "user"]
    else:
        assert request.header("X-Majordomo-Provider") is None


@pytest.mark.parametrize("provider", ["anthropic", "openai"])
async def test_agent_arun_through_gateway(gateway_env: FakeGateway, provider: str) -> None:
    agent = Agent(model=create_model(provider, feature="async"), telemetry=False)  # type: ignore[call-overload]
    result = await agent.arun("Hello!")
    assert result.content == REPLY_TEXT
    request = gateway_env.last()
    assert_single(request, "X-Majordomo-Key", MAJORDOMO_KEY)
    assert_single(request, "X-Majordomo-Feature", "async")


@pytest.mark.parametrize("provider", ["anthropic", "openai", "gemini"])
async def test_tags_reach_create_model_models_without_instrument(gateway_env: FakeGateway, provider: str) -> None:
    """A tag replaces the metadata given to create_model; concurrent runs keep their own tags."""
    from majordomo_frameworks import tag

    agent = Agent(model=create_model(provider, feature="model-level", step="main"),  # type: ignore[call-overload]
                  telemetry=False)

    async def run(user: str) -> None:
        with tag(feature="tagged", user_id=user):
            await agent.arun(f"Hello {user}!")

    await asyncio.gather(run("u-1"), run("u-2"))
    with tag(team="sync"):
        agent.run("Hello sync!")
    requests = gateway_env.snapshot()
    by_user = {r.header("X-Majordomo-User-Id"): r for r in requests}
    assert set(by_user) == {"u-1", "u-2", None}
    for user in ("u-1", "u-2"):
        request = by_user[user]
        assert user in str(request.body["messages"])
        assert_single(request, "X-Majordomo-Feature", "tagged")
        assert_single(request, "X-Majordomo-Step", "main")
        assert_single(request, "X-Majordomo-Key", MAJORDOMO_KEY)
    assert_single(by_user[None], "X-Majordomo-Team", "sync")
    assert_single(by_user[None], "X-Majordomo-Feature", "model-level")
