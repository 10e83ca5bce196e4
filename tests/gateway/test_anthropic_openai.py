"""The anthropic-openai route end to end: the real openai SDK → the gateway → the Anthropic mock."""

from __future__ import annotations

from collections.abc import AsyncIterator
from decimal import Decimal

import openai
import orjson
import pytest
from majordomo_gateway.config import load_settings
from majordomo_gateway.proxy.routing import Router

from tests.support import GatewayProcess
from tests.support.upstream import DEFAULT_TEXT, MockUpstream

ANTHROPIC_KEY = "sk-ant-translate-0123456789abcdef"
MODEL = "claude-sonnet-4-20250514"
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
USAGE = {"input_tokens": 10_000, "output_tokens": 500, "cached_tokens": 4000, "cache_creation_tokens": 3000,
         "cache_creation_1h_tokens": 1000}


def mtok(tokens: int, usd: str) -> Decimal:
    return Decimal(tokens) * Decimal(usd) / Decimal(1_000_000)


# Claude Sonnet 4: $3 input, $0.30 cache read, $3.75 5-minute write, $6 1-hour write, $15 output.
EXPECTED_COST = mtok(3000, "3") + mtok(4000, "0.30") + mtok(2000, "3.75") + mtok(1000, "6") + mtok(500, "15")


@pytest.fixture
async def client(gateway: GatewayProcess) -> AsyncIterator[openai.AsyncOpenAI]:
    sdk = openai.AsyncOpenAI(
        base_url=gateway.url + "/v1",
        api_key=ANTHROPIC_KEY,
        max_retries=0,
        timeout=10,
        default_headers={"X-Majordomo-Key": gateway.key, "X-Majordomo-Provider": "anthropic-openai",
                         "X-Majordomo-Feature": "translated"},
    )
    yield sdk
    await sdk.close()


def usage_headers(**extra: str) -> dict[str, str]:
    return {"X-Mock-Usage": orjson.dumps(USAGE).decode(), **extra}


async def assert_row(gateway: GatewayProcess, request_id: str, *, streamed: bool) -> dict:
    row = await gateway.row(request_id)
    assert (row["provider"], row["route"], row["model"]) == ("anthropic", "anthropic-openai", MODEL)
    assert row["request_path"] == "/v1/chat/completions"
    assert row["streamed"] is streamed
    assert (row["input_tokens"], row["output_tokens"], row["cached_tokens"], row["cache_creation_tokens"],
            row["cache_creation_1h_tokens"]) == (10_000, 500, 4000, 3000, 1000)
    assert row["usage_source"] == "reported"
    assert Decimal(str(row["total_cost"])).quantize(Decimal("1e-9")) == EXPECTED_COST.quantize(Decimal("1e-9"))
    assert row["raw_metadata"] == {"Feature": "translated"}
    assert row["provider_api_key_hash"] is not None
    return row


async def test_text_completion(gateway: GatewayProcess, mock_upstream: MockUpstream,
                               client: openai.AsyncOpenAI) -> None:
    mock_upstream.clear()
    raw = await client.chat.completions.with_raw_response.create(
        model=MODEL,
        messages=[{"role": "system", "content": "Be brief."},
                  {"role": "developer", "content": [{"type": "text", "text": "No emojis."}]},
                  {"role": "user", "content": "Hello!"}],
        temperature=1.5, top_p=0.9, stop=["END"], max_completion_tokens=300, user="user-7",
        extra_headers={**usage_headers(), "anthropic-beta": "prompt-caching-2024-07-31"},
    )
    completion = raw.parse()
    assert completion.object == "chat.completion"
    assert completion.choices[0].message.content == DEFAULT_TEXT
    assert completion.choices[0].message.role == "assistant"
    assert completion.choices[0].finish_reason == "stop"
    assert completion.model == MODEL
    assert completion.usage is not None
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens,
            completion.usage.total_tokens) == (10_000, 500, 10_500)
    assert completion.usage.prompt_tokens_details is not None
    assert completion.usage.prompt_tokens_details.cached_tokens == 4000

    seen = mock_upstream.requests[-1]
    assert seen.path == "/v1/messages"
    assert seen.headers["x-api-key"] == ANTHROPIC_KEY
    assert "authorization" not in seen.headers
    assert seen.headers["anthropic-version"] == "2023-06-01"
    assert seen.headers["anthropic-beta"] == "prompt-caching-2024-07-31"
    assert not [name for name in seen.headers if name.startswith("x-majordomo-")]
    body = seen.json()
    assert body == {
        "model": MODEL,
        "max_tokens": 300,
        "messages": [{"role": "user", "content": [{"type": "text", "text": "Hello!"}]}],
        "system": [{"type": "text", "text": "Be brief."}, {"type": "text", "text": "No emojis."}],
        "stop_sequences": ["END"],
        "temperature": 1,
        "top_p": 0.9,
        "metadata": {"user_id": "user-7"},
    }
    await assert_row(gateway, raw.headers["x-majordomo-request-id"], streamed=False)


async def test_max_tokens_defaults_and_client_anthropic_version_wins(
        mock_upstream: MockUpstream, client: openai.AsyncOpenAI) -> None:
    mock_upstream.clear()
    await client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Hi"}],
                                         extra_headers={"anthropic-version": "2099-01-01"})
    seen = mock_upstream.requests[-1]
    assert seen.json()["max_tokens"] == 4096
    assert seen.headers["anthropic-version"] == "2099-01-01"
    await client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Hi"}], max_tokens=77)
    assert mock_upstream.requests[-1].json()["max_tokens"] == 77


@pytest.mark.parametrize("include_usage", [True, False], ids=["include-usage", "no-usage-chunk"])
async def test_streaming(gateway: GatewayProcess, mock_upstream: MockUpstream, client: openai.AsyncOpenAI,
                         include_usage: bool) -> None:
    mock_upstream.clear()
    options = {"stream_options": {"include_usage": True}} if include_usage else {}
    raw = await client.chat.completions.with_raw_response.create(
        model=MODEL, messages=[{"role": "user", "content": "Hello!"}], stream=True,
        extra_headers={**usage_headers(), "X-Mock-Chunks": "5"}, **options,
    )
    assert raw.headers["content-type"].startswith("text/event-stream")
    chunks = [chunk async for chunk in raw.parse()]
    assert mock_upstream.requests[-1].json()["stream"] is True
    assert all(chunk.object == "chat.completion.chunk" for chunk in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == DEFAULT_TEXT
    assert len([c for c in chunks if c.choices and c.choices[0].delta.content]) == 5
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["stop"]
    usage_chunks = [c for c in chunks if c.usage is not None]
    if include_usage:
        [last] = usage_chunks
        assert last is chunks[-1] and last.choices == []
        assert (last.usage.prompt_tokens, last.usage.completion_tokens) == (10_000, 500)
        assert last.usage.prompt_tokens_details.cached_tokens == 4000
    else:
        assert usage_chunks == []
    await assert_row(gateway, raw.headers["x-majordomo-request-id"], streamed=True)


@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
async def test_tool_call_round_trip(gateway: GatewayProcess, mock_upstream: MockUpstream,
                                    client: openai.AsyncOpenAI, stream: bool) -> None:
    messages: list[dict] = [{"role": "user", "content": "Weather in Paris?"}]
    mock_upstream.clear()
    first = await _complete(client, stream, messages=messages, tools=[WEATHER], tool_choice="auto",
                            parallel_tool_calls=False,
                            extra_headers={"X-Mock-Scenario": "tool-call",
                                           "X-Mock-Tool-Args": '{"city": "Paris"}'})
    sent = mock_upstream.requests[-1].json()
    assert sent["tools"] == [{"name": "get_weather", "description": "Weather in a city",
                              "input_schema": WEATHER["function"]["parameters"]}]
    assert sent["tool_choice"] == {"type": "auto", "disable_parallel_tool_use": True}
    assert first["finish_reason"] == "tool_calls"
    [call] = first["tool_calls"]
    assert call["name"] == "get_weather"
    assert orjson.loads(call["arguments"]) == {"city": "Paris"}
    assert call["id"].startswith("toolu_")

    messages += [
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": call["id"], "type": "function",
             "function": {"name": "get_weather", "arguments": call["arguments"]}}]},
        {"role": "tool", "tool_call_id": call["id"], "content": "Sunny, 21 C"},
    ]
    second = await _complete(client, stream, messages=messages, tools=[WEATHER],
                             extra_headers={"X-Mock-Scenario": "tool-call"})
    sent = mock_upstream.requests[-1].json()
    assert sent["messages"][1:] == [
        {"role": "assistant", "content": [{"type": "tool_use", "id": call["id"], "name": "get_weather",
                                           "input": {"city": "Paris"}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call["id"],
                                      "content": "Sunny, 21 C"}]},
    ]
    assert second["finish_reason"] == "stop"
    assert second["content"] == DEFAULT_TEXT
    assert second["tool_calls"] == []
    row = await gateway.row(second["request_id"])
    assert (row["route"], row["usage_source"], row["streamed"]) == ("anthropic-openai", "reported", stream)
    assert row["total_cost"] is not None


async def _complete(client: openai.AsyncOpenAI, stream: bool, **kwargs) -> dict:
    """content, tool calls and finish reason, the same way for a plain and a streamed answer."""
    raw = await client.chat.completions.with_raw_response.create(model=MODEL, stream=stream, **kwargs)
    result = raw.parse()
    request_id = raw.headers["x-majordomo-request-id"]
    if not stream:
        choice = result.choices[0]
        calls = [{"id": c.id, "name": c.function.name, "arguments": c.function.arguments}
                 for c in choice.message.tool_calls or []]
        return {"content": choice.message.content, "tool_calls": calls, "finish_reason": choice.finish_reason,
                "request_id": request_id}
    content, finish, calls = "", None, {}
    async for chunk in result:
        for choice in chunk.choices:
            content += choice.delta.content or ""
            finish = choice.finish_reason or finish
            for delta in choice.delta.tool_calls or []:
                call = calls.setdefault(delta.index, {"id": None, "name": "", "arguments": ""})
                call["id"] = delta.id or call["id"]
                if delta.function is not None:
                    call["name"] += delta.function.name or ""
                    call["arguments"] += delta.function.arguments or ""
    return {"content": content or None if calls else content, "tool_calls": list(calls.values()),
            "finish_reason": finish, "request_id": request_id}


async def test_image_parts_and_required_tool_choice(mock_upstream: MockUpstream, client: openai.AsyncOpenAI) -> None:
    mock_upstream.clear()
    completion = await client.chat.completions.create(
        model=MODEL, tools=[WEATHER], tool_choice={"type": "function", "function": {"name": "get_weather"}},
        messages=[{"role": "user", "content": [
            {"type": "text", "text": "What is this?"},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
            {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}},
        ]}],
    )
    sent = mock_upstream.requests[-1].json()
    assert sent["tool_choice"] == {"type": "tool", "name": "get_weather"}
    assert sent["messages"][0]["content"][1:] == [
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}},
        {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}},
    ]
    assert completion.choices[0].finish_reason == "tool_calls"


async def test_upstream_error_is_translated_and_recorded(gateway: GatewayProcess,
                                                         client: openai.AsyncOpenAI) -> None:
    with pytest.raises(openai.RateLimitError) as caught:
        await client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Hi"}],
                                             extra_headers={"X-Mock-Status": "429"})
    assert caught.value.type == "rate_limit_error"
    assert "rate limit" in caught.value.message.lower()
    row = await gateway.row(caught.value.response.headers["x-majordomo-request-id"])
    assert (row["status_code"], row["route"]) == (429, "anthropic-openai")
    assert "rate_limit_error" in row["error_message"]


async def test_in_stream_error_reaches_the_sdk_and_the_row(gateway: GatewayProcess,
                                                           client: openai.AsyncOpenAI) -> None:
    raw = await client.chat.completions.with_raw_response.create(
        model=MODEL, messages=[{"role": "user", "content": "Hi"}], stream=True,
        extra_headers={"X-Mock-Scenario": "stream-error"})
    with pytest.raises(openai.APIError, match="Overloaded"):
        async for _ in raw.parse():
            pass
    row = await gateway.row(raw.headers["x-majordomo-request-id"])
    assert "overloaded_error" in row["error_message"]


async def test_untranslatable_request_gets_400(gateway: GatewayProcess, client: openai.AsyncOpenAI) -> None:
    with pytest.raises(openai.BadRequestError, match="n must be 1"):
        await client.chat.completions.create(model=MODEL, n=2, messages=[{"role": "user", "content": "Hi"}])
    with pytest.raises(openai.BadRequestError, match="serves only POST /v1/chat/completions"):
        await client.embeddings.create(model=MODEL, input="hi")


async def test_route_name_is_listed_and_routes_to_the_anthropic_base(gateway: GatewayProcess) -> None:
    router = Router(load_settings(environ={"MAJORDOMO_PROVIDERS_ANTHROPIC_BASE_URL": "http://anthropic.test"}).providers)
    route = router.resolve("/v1/chat/completions", b"/v1/chat/completions", "Anthropic-OpenAI")
    assert (route.name, route.provider.name, route.base_url) == ("anthropic-openai", "anthropic",
                                                                 "http://anthropic.test")
    # Never chosen by path alone.
    assert router.resolve("/v1/chat/completions", b"/v1/chat/completions", None).name == "openai"

    sdk = openai.AsyncOpenAI(base_url=gateway.url + "/v1", api_key="k", max_retries=0,
                             default_headers={"X-Majordomo-Key": gateway.key, "X-Majordomo-Provider": "bedrock"})
    with pytest.raises(openai.BadRequestError, match="gemini-openai, anthropic-openai"):
        await sdk.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Hi"}])
    await sdk.close()
