"""majordomo_frameworks.tag + instrument(), end to end: real SDK clients → real gateway → mock upstream, and
the rows' raw_metadata. The same clients pointed at the mock upstream directly must send no X-Majordomo-*.

Every test runs on SQLite and on PostgreSQL (the ``gateway`` fixture is parametrised).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import anthropic
import openai
import pytest
from google import genai
from google.genai import types as genai_types
from majordomo_frameworks import instrument, tag, uninstrument
from majordomo_frameworks.pydantic_ai import create_model
from pydantic_ai import Agent

from tests.support import GatewayProcess
from tests.support.gateway import latest_rows
from tests.support.guide import PROVIDER_KEYS
from tests.support.upstream import MockUpstream

MESSAGES = [{"role": "user", "content": "Hello!"}]


@pytest.fixture
def env(gateway: GatewayProcess, mock_upstream: MockUpstream,
        monkeypatch: pytest.MonkeyPatch) -> Iterator[GatewayProcess]:
    monkeypatch.setenv("MAJORDOMO_GATEWAY_URL", gateway.url)
    monkeypatch.setenv("MAJORDOMO_API_KEY", gateway.key)
    for name, value in PROVIDER_KEYS.items():
        monkeypatch.setenv(name, value)
    mock_upstream.clear()
    instrument()
    yield gateway
    uninstrument()


def no_majordomo_headers(mock: MockUpstream) -> None:
    """Nothing X-Majordomo-* reached the upstream: not through the gateway, not called directly."""
    assert mock.requests
    for request in mock.requests:
        assert not [name for name in request.headers if name.startswith("x-majordomo-")], request.path


async def test_openai_sync_and_async(env: GatewayProcess, mock_upstream: MockUpstream) -> None:
    # No X-Majordomo-Key on these clients: instrument() adds it from MAJORDOMO_API_KEY.
    sync_client = openai.OpenAI(base_url=f"{env.url}/v1", api_key=PROVIDER_KEYS["OPENAI_API_KEY"], max_retries=0,
                                default_headers={"X-Majordomo-Feature": "client-default"})
    async_client = openai.AsyncOpenAI(base_url=f"{env.url}/v1", api_key=PROVIDER_KEYS["OPENAI_API_KEY"],
                                      max_retries=0)
    direct = openai.OpenAI(base_url=mock_upstream.openai_base_url, api_key="sk-direct", max_retries=0)

    with tag(feature="support-bot", team="search"):
        sync_reply = sync_client.chat.completions.with_raw_response.create(
            model="gpt-4o", messages=MESSAGES, extra_headers={"X-Majordomo-Step": "explicit"})  # type: ignore[arg-type]

        async def ask(user: str) -> str:
            with tag(user_id=user, request_kind="answer"):
                await asyncio.sleep(0.01)
                reply = await async_client.chat.completions.with_raw_response.create(
                    model="gpt-4o", messages=MESSAGES)  # type: ignore[arg-type]
                return reply.headers["x-majordomo-request-id"]

        ids = await asyncio.gather(ask("u-1"), ask("u-2"))
        direct.chat.completions.create(model="gpt-4o", messages=MESSAGES)  # type: ignore[arg-type]

    row = await env.row(sync_reply.headers["x-majordomo-request-id"])
    assert row["majordomo_api_key_id"] == env.key_id
    assert row["raw_metadata"] == {"Feature": "support-bot", "Team": "search", "Step": "explicit"}
    for user, request_id in zip(("u-1", "u-2"), ids, strict=True):
        row = await env.row(request_id)
        assert row["raw_metadata"] == {"Feature": "support-bot", "Team": "search", "User-Id": user,
                                       "Request-Kind": "answer"}
    assert mock_upstream.requests[-1].header("authorization") == "Bearer sk-direct"
    no_majordomo_headers(mock_upstream)


async def test_anthropic(env: GatewayProcess, mock_upstream: MockUpstream) -> None:
    client = anthropic.AsyncAnthropic(base_url=env.url, api_key=PROVIDER_KEYS["ANTHROPIC_API_KEY"], max_retries=0)
    direct = anthropic.AsyncAnthropic(base_url=mock_upstream.anthropic_base_url, api_key="sk-ant-direct",
                                      max_retries=0)

    @tag(feature="summarise", session_id="conversation-3")
    async def summarise() -> str:
        reply = await client.messages.with_raw_response.create(
            model="claude-sonnet-4-20250514", max_tokens=64, messages=MESSAGES)  # type: ignore[arg-type]
        await direct.messages.create(model="claude-sonnet-4-20250514", max_tokens=64,
                                     messages=MESSAGES)  # type: ignore[arg-type]
        return reply.headers["x-majordomo-request-id"]

    row = await env.row(await summarise())
    assert (row["provider"], row["majordomo_api_key_id"]) == ("anthropic", env.key_id)
    assert row["raw_metadata"] == {"Feature": "summarise", "Session-Id": "conversation-3"}
    no_majordomo_headers(mock_upstream)


async def test_google_genai_sync_and_async(env: GatewayProcess, mock_upstream: MockUpstream) -> None:
    client = genai.Client(api_key=PROVIDER_KEYS["GEMINI_API_KEY"],
                          http_options=genai_types.HttpOptions(base_url=env.url))
    direct = genai.Client(api_key="AIza-direct", http_options=genai_types.HttpOptions(base_url=mock_upstream.url))

    with tag(feature="genai", user_id="u-9"):
        sync_reply = client.models.generate_content(model="gemini-2.5-flash", contents="Hello!")
        with tag(step="stream"):
            chunks = [chunk async for chunk in await client.aio.models.generate_content_stream(
                model="gemini-2.5-flash", contents="Hello!")]
        # google-genai merges HttpOptions headers into the request itself, so (as the guide says) they win.
        with_defaults = genai.Client(api_key=PROVIDER_KEYS["GEMINI_API_KEY"], http_options=genai_types.HttpOptions(
            base_url=env.url, headers={"X-Majordomo-Feature": "client-level"}))
        default_reply = await with_defaults.aio.models.generate_content(model="gemini-2.5-flash", contents="Hi")
        direct.models.generate_content(model="gemini-2.5-flash", contents="Hello!")
        await direct.aio.models.generate_content(model="gemini-2.5-flash", contents="Hello!")

    sync_id = sync_reply.sdk_http_response.headers["x-majordomo-request-id"]  # type: ignore[union-attr,index]
    stream_id = chunks[0].sdk_http_response.headers["x-majordomo-request-id"]  # type: ignore[union-attr,index]
    sync_row, stream_row = await env.row(sync_id), await env.row(stream_id)
    assert (sync_row["provider"], sync_row["majordomo_api_key_id"]) == ("gemini", env.key_id)
    assert sync_row["raw_metadata"] == {"Feature": "genai", "User-Id": "u-9"}
    assert stream_row["streamed"] is True
    assert stream_row["raw_metadata"] == {"Feature": "genai", "User-Id": "u-9", "Step": "stream"}
    default_id = default_reply.sdk_http_response.headers["x-majordomo-request-id"]  # type: ignore[union-attr,index]
    assert (await env.row(default_id))["raw_metadata"] == {"Feature": "client-level", "User-Id": "u-9"}
    assert mock_upstream.requests[-1].query_params.get("key") == "AIza-direct" or \
        mock_upstream.requests[-1].header("x-goog-api-key") == "AIza-direct"
    no_majordomo_headers(mock_upstream)


@pytest.mark.parametrize("provider", ["anthropic", "openai"])
async def test_pydantic_ai_two_concurrent_runs(env: GatewayProcess, mock_upstream: MockUpstream,
                                              provider: str) -> None:
    """create_model models need no instrument(); Step and Session-Id default to the agent and the run."""
    uninstrument()
    model = create_model(provider)  # type: ignore[call-overload]
    researcher = Agent(model=model, name="researcher")
    writer = Agent(model=model, name="writer")

    @tag(feature="research")
    async def workflow(user: str) -> dict[str, str]:
        with tag(user_id=user):
            first = await researcher.run(f"research for {user}")
            second = await writer.run(f"write for {user}")
        return {"researcher": first.run_id, "writer": second.run_id}

    runs = dict(zip(("u-1", "u-2"), await asyncio.gather(workflow("u-1"), workflow("u-2")), strict=True))
    rows = await latest_rows(env, 4)
    seen = {(row["raw_metadata"]["User-Id"], row["raw_metadata"]["Step"]): row["raw_metadata"] for row in rows}
    assert seen == {
        (user, step): {"Feature": "research", "User-Id": user, "Step": step, "Session-Id": runs[user][step]}
        for user in ("u-1", "u-2") for step in ("researcher", "writer")
    }
    assert all(row["majordomo_api_key_id"] == env.key_id for row in rows)
    no_majordomo_headers(mock_upstream)


async def test_langchain_chat_openai_sync_async_and_stream(env: GatewayProcess, mock_upstream: MockUpstream) -> None:
    from langchain_openai import ChatOpenAI

    chat = ChatOpenAI(model="gpt-4o", base_url=f"{env.url}/v1", api_key=PROVIDER_KEYS["OPENAI_API_KEY"],  # type: ignore[arg-type]
                      max_retries=0)
    with tag(feature="langchain", user_id="u-lc"):
        chat.invoke("Hello!")
        with tag(step="async"):
            await chat.ainvoke("Hello!")
        with tag(step="stream"):
            "".join(str(chunk.content) for chunk in chat.stream("Hello!"))

    rows = await latest_rows(env, 3)
    steps = sorted(str(row["raw_metadata"].get("Step")) for row in rows)
    assert steps == ["None", "async", "stream"]
    for row in rows:
        assert row["majordomo_api_key_id"] == env.key_id
        assert row["raw_metadata"]["Feature"] == "langchain"
        assert row["raw_metadata"]["User-Id"] == "u-lc"
    assert [row["streamed"] for row in rows if row["raw_metadata"].get("Step") == "stream"] == [True]
    no_majordomo_headers(mock_upstream)


async def test_openai_agents_runner(env: GatewayProcess, mock_upstream: MockUpstream) -> None:
    from agents import Agent as AgentsAgent
    from agents import OpenAIChatCompletionsModel, Runner, set_tracing_disabled

    set_tracing_disabled(True)  # the SDK would otherwise export traces to OpenAI's servers
    client = openai.AsyncOpenAI(base_url=f"{env.url}/v1", api_key=PROVIDER_KEYS["OPENAI_API_KEY"], max_retries=0)
    agent = AgentsAgent(name="helper", instructions="Be brief.",
                        model=OpenAIChatCompletionsModel(model="gpt-4o", openai_client=client))

    async def run_for(user: str) -> None:
        with tag(feature="agents-sdk", user_id=user):
            await Runner.run(agent, "Hello!")

    await asyncio.gather(run_for("u-a"), run_for("u-b"))
    rows = await latest_rows(env, 2)
    assert sorted(row["raw_metadata"]["User-Id"] for row in rows) == ["u-a", "u-b"]
    assert all(row["raw_metadata"]["Feature"] == "agents-sdk" and row["majordomo_api_key_id"] == env.key_id
               for row in rows)
    no_majordomo_headers(mock_upstream)


async def test_litellm_as_a_client_sync_and_async(env: GatewayProcess, mock_upstream: MockUpstream,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    # Read at import: LiteLLM would otherwise fetch its price map from the internet.
    monkeypatch.setenv("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    import litellm

    options = {"model": "openai/gpt-4o", "api_base": f"{env.url}/v1", "api_key": PROVIDER_KEYS["OPENAI_API_KEY"],
               "messages": MESSAGES, "num_retries": 0}
    with tag(feature="litellm", user_id="u-ll"):
        litellm.completion(**options)
        with tag(step="async"):
            await litellm.acompletion(**options)

    rows = await latest_rows(env, 2)
    assert sorted(str(row["raw_metadata"].get("Step")) for row in rows) == ["None", "async"]
    assert all(row["raw_metadata"]["User-Id"] == "u-ll" and row["majordomo_api_key_id"] == env.key_id
               for row in rows)
    no_majordomo_headers(mock_upstream)


async def test_agno_plain_model_with_instrument(env: GatewayProcess, mock_upstream: MockUpstream,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """An agno model built by hand (not create_model) picks the tags up through instrument()."""
    monkeypatch.setenv("AGNO_TELEMETRY", "false")
    from agno.agent import Agent as AgnoAgent
    from agno.models.openai import OpenAIChat

    model = OpenAIChat(id="gpt-4o", base_url=f"{env.url}/v1", api_key=PROVIDER_KEYS["OPENAI_API_KEY"])
    with tag(feature="agno-plain", user_id="u-ag"):
        await AgnoAgent(model=model, instructions="Be brief.").arun("Hello!")
    [row] = await latest_rows(env, 1)
    assert row["majordomo_api_key_id"] == env.key_id
    assert row["raw_metadata"] == {"Feature": "agno-plain", "User-Id": "u-ag"}
    no_majordomo_headers(mock_upstream)
