"""majordomo_frameworks.pydantic_ai: unit tests, and wire tests of real agents against the fake gateway.

Runs against whichever pydantic-ai is installed; frameworks/scripts/test-pydantic-ai-1x.sh runs it on 1.x.
"""

from __future__ import annotations

import asyncio
import re

import pytest

pydantic_ai = pytest.importorskip("pydantic_ai")

from frameworks_fake_gateway import REPLY_TEXT, FakeGateway, RecordedRequest  # noqa: E402
from frameworks_test_env import MAJORDOMO_KEY, PROVIDER_KEYS  # noqa: E402
from majordomo_frameworks import MissingEnvironmentVariableError  # noqa: E402
from majordomo_frameworks.pydantic_ai import (  # noqa: E402
    AnthropicModelSettings,
    OpenAIChatModelSettings,
    build_extra_headers,
    build_extra_headers_gemini,
    create_model,
)
from pydantic_ai import Agent  # noqa: E402
from pydantic_ai.models.anthropic import AnthropicModel  # noqa: E402
from pydantic_ai.models.anthropic import AnthropicModelSettings as UpstreamAnthropicSettings  # noqa: E402
from pydantic_ai.models.openai import OpenAIChatModel  # noqa: E402
from pydantic_ai.models.openai import OpenAIChatModelSettings as UpstreamOpenAISettings  # noqa: E402
from pydantic_ai.providers import Provider as PydanticAIProvider  # noqa: E402

PYDANTIC_AI_MAJOR = int(pydantic_ai.__version__.split(".")[0])


def auth_value(request: RecordedRequest) -> str | None:
    """The provider key as the SDK sent it: ``Authorization: Bearer`` or Anthropic's ``x-api-key``."""
    if (api_key := request.header("x-api-key")) is not None:
        return api_key
    authorization = request.header("authorization") or ""
    return authorization.removeprefix("Bearer ") or None


# --- unit --------------------------------------------------------------------------------------------


class TestCreateModel:
    def test_anthropic(self, gateway_env: FakeGateway) -> None:
        model = create_model("anthropic")
        assert isinstance(model, AnthropicModel)
        assert model.model_name == "claude-sonnet-4-20250514"
        # The Anthropic SDK appends /v1/messages itself, so the base URL is the gateway root.
        assert model.base_url.rstrip("/") == gateway_env.url

    @pytest.mark.parametrize(("provider", "default_name"), [("openai", "gpt-4o"), ("gemini", "gemini-2.0-flash")])
    def test_openai_compatible(self, gateway_env: FakeGateway, provider: str, default_name: str) -> None:
        model = create_model(provider)  # type: ignore[call-overload]
        assert isinstance(model, OpenAIChatModel)
        assert model.model_name == default_name
        assert model.base_url.rstrip("/") == f"{gateway_env.url}/v1"

    def test_model_name(self, gateway_env: FakeGateway) -> None:
        assert create_model("anthropic", "claude-opus-4-5-20251101").model_name == "claude-opus-4-5-20251101"
        assert create_model("openai", model_name="gpt-4o-mini").model_name == "gpt-4o-mini"

    def test_gemini_uses_gemini_profile(self, gateway_env: FakeGateway) -> None:
        profile = create_model("gemini", "gemini-2.5-pro").profile
        # A TypedDict on pydantic-ai 2.x, a dataclass on 1.x.
        if isinstance(profile, dict):
            transformer = profile["json_schema_transformer"]
        else:
            transformer = profile.json_schema_transformer
        assert transformer.__name__ == "GoogleJsonSchemaTransformer"

    def test_gateway_url_trailing_slash(self, gateway_env: FakeGateway, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("MAJORDOMO_GATEWAY_URL", f"{gateway_env.url}/")
        assert create_model("openai").base_url.rstrip("/") == f"{gateway_env.url}/v1"

    def test_unknown_provider(self, gateway_env: FakeGateway) -> None:
        with pytest.raises(ValueError, match=re.escape("Valid providers: 'openai', 'anthropic', 'gemini'")):
            create_model("azure")  # type: ignore[call-overload]

    @pytest.mark.parametrize(
        ("provider", "variable"),
        [("openai", "OPENAI_API_KEY"), ("anthropic", "ANTHROPIC_API_KEY"), ("gemini", "GEMINI_API_KEY")],
    )
    def test_missing_provider_key(
        self, gateway_env: FakeGateway, monkeypatch: pytest.MonkeyPatch, provider: str, variable: str
    ) -> None:
        monkeypatch.delenv(variable)
        with pytest.raises(MissingEnvironmentVariableError, match=variable) as raised:
            create_model(provider)  # type: ignore[call-overload]
        assert isinstance(raised.value, ValueError)
        assert not isinstance(raised.value, KeyError)

    def test_gemini_ignores_openai_key(self, gateway_env: FakeGateway, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.delenv("GEMINI_API_KEY")
        with pytest.raises(ValueError, match="GEMINI_API_KEY"):
            create_model("gemini")

    def test_missing_majordomo_key(self, gateway_env: FakeGateway, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.delenv("MAJORDOMO_API_KEY")
        with pytest.raises(ValueError, match=r"^MAJORDOMO_API_KEY environment variable is required$"):
            create_model("anthropic")


def test_settings_are_reexported() -> None:
    assert AnthropicModelSettings is UpstreamAnthropicSettings
    assert OpenAIChatModelSettings is UpstreamOpenAISettings


def test_build_extra_headers(gateway_env: FakeGateway) -> None:
    assert build_extra_headers(feature="chat", step="main", user_id="u1", session_id="s1") == {
        "X-Majordomo-Key": MAJORDOMO_KEY,
        "X-Majordomo-Feature": "chat",
        "X-Majordomo-Step": "main",
        "X-Majordomo-User-Id": "u1",
        "X-Majordomo-Session-Id": "s1",
    }
    assert "X-Majordomo-Provider" not in build_extra_headers(feature="chat")


def test_build_extra_headers_gemini(gateway_env: FakeGateway) -> None:
    headers = build_extra_headers_gemini(feature="chat", extra_headers={"X-Custom": "1"})
    assert headers == {
        "X-Majordomo-Key": MAJORDOMO_KEY,
        "X-Majordomo-Provider": "gemini-openai",
        "X-Majordomo-Feature": "chat",
        "X-Custom": "1",
    }


# --- wire: real agents against the fake gateway --------------------------------------------------------


def assert_single(request: RecordedRequest, name: str, value: str) -> None:
    assert request.header(name) == value, request.majordomo_headers()
    assert request.header_count(name) == 1, f"{name} sent {request.header_count(name)} times"


@pytest.mark.parametrize(
    ("provider", "path", "key_variable", "model_name"),
    [
        ("anthropic", "/v1/messages", "ANTHROPIC_API_KEY", "claude-sonnet-4-20250514"),
        ("openai", "/v1/chat/completions", "OPENAI_API_KEY", "gpt-4o"),
        ("gemini", "/v1/chat/completions", "GEMINI_API_KEY", "gemini-2.0-flash"),
    ],
)
async def test_run_without_model_settings_is_authenticated(
    gateway_env: FakeGateway, provider: str, path: str, key_variable: str, model_name: str
) -> None:
    agent = Agent(model=create_model(provider), system_prompt="You are a helpful assistant.")  # type: ignore[call-overload]
    result = await agent.run("Hello!")
    assert result.output == REPLY_TEXT
    request = gateway_env.last()
    assert request.method == "POST"
    assert request.path == path
    assert request.body["model"] == model_name
    assert auth_value(request) == PROVIDER_KEYS[key_variable]
    assert_single(request, "X-Majordomo-Key", MAJORDOMO_KEY)
    if provider == "gemini":
        assert_single(request, "X-Majordomo-Provider", "gemini-openai")
    else:
        assert request.header("X-Majordomo-Provider") is None


async def test_anthropic_metadata_from_model_settings(gateway_env: FakeGateway) -> None:
    agent = Agent(model=create_model("anthropic"), system_prompt="You are helpful.")
    headers = build_extra_headers(feature="research-agent", step="analysis", user_id="user-123", session_id="s-1")
    await agent.run("Hello!", model_settings=AnthropicModelSettings(max_tokens=1024, extra_headers=headers))
    request = gateway_env.last()
    assert request.path == "/v1/messages"
    assert request.body["max_tokens"] == 1024
    assert_single(request, "X-Majordomo-Key", MAJORDOMO_KEY)
    assert_single(request, "X-Majordomo-Feature", "research-agent")
    assert_single(request, "X-Majordomo-Step", "analysis")
    assert_single(request, "X-Majordomo-User-Id", "user-123")
    assert_single(request, "X-Majordomo-Session-Id", "s-1")


async def test_openai_metadata_and_custom_headers(gateway_env: FakeGateway) -> None:
    agent = Agent(model=create_model("openai"))
    headers = {"X-Custom-Header": "value", **build_extra_headers(feature="chat")}
    await agent.run("Hello!", model_settings=OpenAIChatModelSettings(extra_headers=headers))
    request = gateway_env.last()
    assert request.path == "/v1/chat/completions"
    assert_single(request, "X-Majordomo-Key", MAJORDOMO_KEY)
    assert_single(request, "X-Majordomo-Feature", "chat")
    assert_single(request, "X-Custom-Header", "value")


@pytest.mark.parametrize("builder", [build_extra_headers_gemini, build_extra_headers])
async def test_gemini_route_header_with_either_builder(gateway_env: FakeGateway, builder: object) -> None:
    """create_model("gemini") always routes to gemini-openai; the _gemini builder doesn't duplicate it."""
    agent = Agent(model=create_model("gemini"))
    await agent.run("Hello!", model_settings=OpenAIChatModelSettings(extra_headers=builder(feature="chat")))  # type: ignore[operator]
    request = gateway_env.last()
    assert request.path == "/v1/chat/completions"
    assert auth_value(request) == PROVIDER_KEYS["GEMINI_API_KEY"]
    assert_single(request, "X-Majordomo-Provider", "gemini-openai")
    assert_single(request, "X-Majordomo-Key", MAJORDOMO_KEY)
    assert_single(request, "X-Majordomo-Feature", "chat")


async def test_run_level_extra_headers_replace_agent_level_but_not_defaults(gateway_env: FakeGateway) -> None:
    """pydantic-ai merges model settings shallowly; the SDK merges headers one at a time over its defaults."""
    agent = Agent(
        model=create_model("anthropic"),
        model_settings=AnthropicModelSettings(extra_headers={"X-Majordomo-Feature": "agent-level"}),
    )
    await agent.run("Hello!")
    assert_single(gateway_env.last(), "X-Majordomo-Feature", "agent-level")

    await agent.run("Hello!", model_settings=AnthropicModelSettings(extra_headers={"X-Majordomo-Step": "run"}))
    request = gateway_env.last()
    assert request.header("X-Majordomo-Feature") is None  # the agent-level dict was replaced whole
    assert_single(request, "X-Majordomo-Step", "run")
    assert_single(request, "X-Majordomo-Key", MAJORDOMO_KEY)  # client default header survives


async def test_create_model_metadata_defaults_and_run_override(gateway_env: FakeGateway) -> None:
    agent = Agent(model=create_model("openai", feature="default-feature", user_id=7))
    await agent.run("Hello!")
    request = gateway_env.last()
    assert_single(request, "X-Majordomo-Feature", "default-feature")
    assert_single(request, "X-Majordomo-User-Id", "7")

    settings = OpenAIChatModelSettings(extra_headers=build_extra_headers(feature="run-feature", step="s"))
    await agent.run("Hello!", model_settings=settings)
    request = gateway_env.last()
    assert_single(request, "X-Majordomo-Feature", "run-feature")
    assert_single(request, "X-Majordomo-Step", "s")
    assert_single(request, "X-Majordomo-User-Id", "7")
    assert_single(request, "X-Majordomo-Key", MAJORDOMO_KEY)


async def test_run_level_key_overrides_default_key(gateway_env: FakeGateway) -> None:
    # Same letter case as the default header: Anthropic SDK 0.x (used with pydantic-ai 1.x) merges header
    # names case-sensitively and would send both values for "x-majordomo-key".
    agent = Agent(model=create_model("anthropic"))
    settings = AnthropicModelSettings(extra_headers={"X-Majordomo-Key": "mdm_sk_other_tenant"})
    await agent.run("Hello!", model_settings=settings)
    assert_single(gateway_env.last(), "X-Majordomo-Key", "mdm_sk_other_tenant")


@pytest.mark.skipif(
    not hasattr(PydanticAIProvider, "_refresh_http_client"),
    reason="pydantic-ai 1.x reuses a provider's HTTP client across event loops even without majordomo",
)
@pytest.mark.parametrize("provider", ["anthropic", "openai"])
def test_model_survives_consecutive_event_loops(gateway_env: FakeGateway, provider: str) -> None:
    """The default headers must not stop pydantic-ai 2.x from replacing its HTTP client per event loop."""
    agent = Agent(model=create_model(provider))  # type: ignore[call-overload]
    for _ in range(3):
        assert asyncio.run(agent.run("Hello!")).output == REPLY_TEXT
        assert_single(gateway_env.last(), "X-Majordomo-Key", MAJORDOMO_KEY)
    assert agent.run_sync("Hello!").output == REPLY_TEXT


@pytest.mark.parametrize(
    ("provider", "path"),
    [("anthropic", "/v1/messages"), ("openai", "/v1/chat/completions"), ("gemini", "/v1/chat/completions")],
)
async def test_streaming_run_sends_the_same_headers(gateway_env: FakeGateway, provider: str, path: str) -> None:
    agent = Agent(model=create_model(provider))  # type: ignore[call-overload]
    headers = build_extra_headers(feature="streaming", step="answer")
    async with agent.run_stream("Hello!", model_settings={"extra_headers": headers}) as result:
        chunks = [text async for text in result.stream_output(debounce_by=None)]
    assert chunks[-1] == REPLY_TEXT
    request = gateway_env.last()
    assert request.path == path
    assert request.body["stream"] is True
    assert_single(request, "X-Majordomo-Key", MAJORDOMO_KEY)
    assert_single(request, "X-Majordomo-Feature", "streaming")
    assert_single(request, "X-Majordomo-Step", "answer")
    if provider == "gemini":
        assert_single(request, "X-Majordomo-Provider", "gemini-openai")


@pytest.mark.parametrize("provider", ["anthropic", "openai"])
async def test_agent_context_manager_can_be_reentered(gateway_env: FakeGateway, provider: str) -> None:
    """Leaving ``async with agent`` closes the provider's HTTP client; entering again must give the SDK
    client that carries our default headers a new one."""
    agent = Agent(model=create_model(provider))  # type: ignore[call-overload]
    for _ in range(2):
        async with agent:
            assert (await agent.run("Hello!")).output == REPLY_TEXT
        assert_single(gateway_env.last(), "X-Majordomo-Key", MAJORDOMO_KEY)


# --- tag(): create_model models pick tags up without instrument() --------------------------------------


async def test_tag_precedence_run_settings_over_tag_over_create_model(gateway_env: FakeGateway) -> None:
    from majordomo_frameworks import tag

    model = create_model("openai", feature="model-level", user_id="model-user",
                         extra_headers={"X-Majordomo-Team": "model-team"})
    agent = Agent(model=model, name="writer")
    with tag(feature="tagged", user_id="tag-user"):
        await agent.run("Hello!", model_settings={"extra_headers": {"X-Majordomo-User-Id": "run-user"}})
    request = gateway_env.last()
    assert_single(request, "X-Majordomo-Feature", "tagged")
    assert_single(request, "X-Majordomo-User-Id", "run-user")
    assert_single(request, "X-Majordomo-Team", "model-team")
    assert_single(request, "X-Majordomo-Key", MAJORDOMO_KEY)


@pytest.mark.parametrize("provider", ["anthropic", "openai", "gemini"])
async def test_concurrent_runs_keep_their_tags_and_default_step_and_session(
        gateway_env: FakeGateway, provider: str) -> None:
    from majordomo_frameworks import tag

    model = create_model(provider)  # type: ignore[call-overload]
    planner = Agent(model=model, name="planner")
    writer = Agent(model=model, name="writer")

    @tag(feature="workflow")
    async def workflow(user: str) -> list[str]:
        with tag(user_id=user):
            first = await planner.run(f"plan for {user}")
            second = await writer.run(f"write for {user}")
        return [first.run_id, second.run_id]

    runs = await asyncio.gather(workflow("u-1"), workflow("u-2"))
    seen = {(r.header("X-Majordomo-User-Id"), r.header("X-Majordomo-Step")): r for r in gateway_env.snapshot()}
    assert set(seen) == {(user, step) for user in ("u-1", "u-2") for step in ("planner", "writer")}
    for (user, step), request in seen.items():
        index = ("u-1", "u-2").index(user)
        assert user in str(request.body)
        assert_single(request, "X-Majordomo-Feature", "workflow")
        assert_single(request, "X-Majordomo-Session-Id", runs[index][("planner", "writer").index(step)])
        if provider == "gemini":
            assert_single(request, "X-Majordomo-Provider", "gemini-openai")


async def test_tag_overrides_default_step_and_auto_false_turns_defaults_off(gateway_env: FakeGateway) -> None:
    from majordomo_frameworks import tag

    agent = Agent(model=create_model("anthropic"), name="researcher")
    with tag(step="analysis", session_id="conversation-7"):
        await agent.run("Hello!")
    request = gateway_env.last()
    assert_single(request, "X-Majordomo-Step", "analysis")
    assert_single(request, "X-Majordomo-Session-Id", "conversation-7")

    with tag(auto=False):
        await agent.run("Hello!")
        with tag(feature="inner"):  # an inner tag keeps the outer auto=False
            await agent.run("Hello!")
    for request in gateway_env.snapshot()[-2:]:
        assert request.header("X-Majordomo-Step") is None
        assert request.header("X-Majordomo-Session-Id") is None
    assert gateway_env.last().header("X-Majordomo-Feature") == "inner"
