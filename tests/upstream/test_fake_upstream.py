"""Self-test of the mock upstream: real SDKs pointed straight at it, raw HTTP for the rest."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from typing import Any

import aiohttp
import anthropic
import httpx
import httpx2
import openai
import pytest
from pydantic import BaseModel

from tests.support.upstream import (
    DEFAULT_INPUT_TOKENS,
    DEFAULT_OUTPUT_TOKENS,
    DEFAULT_REASONING_TOKENS,
    DEFAULT_TEXT,
    MockConfigError,
    MockUpstream,
)
from tests.support.upstream.scenarios import example_from_schema, split_text

USAGE = {
    "input_tokens": 1200,
    "output_tokens": 80,
    "cached_tokens": 200,
    "cache_creation_tokens": 300,
    "cache_creation_1h_tokens": 100,
    "reasoning_tokens": 30,
    "tool_use_prompt_tokens": 50,
}
WEATHER_TOOL = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "days": {"type": "integer", "minimum": 3}},
    "required": ["city", "days"],
}
MESSAGES = [{"role": "user", "content": "hi"}]


@pytest.fixture(scope="module")
def mock() -> Iterator[MockUpstream]:
    with MockUpstream() as server:
        yield server


@pytest.fixture(autouse=True)
def _fresh(mock: MockUpstream) -> None:
    mock.reset()


@pytest.fixture
def oai(mock: MockUpstream) -> openai.OpenAI:
    return openai.OpenAI(base_url=mock.openai_base_url, api_key="sk-test", max_retries=0, timeout=5)


@pytest.fixture
def claude(mock: MockUpstream) -> anthropic.Anthropic:
    return anthropic.Anthropic(
        base_url=mock.anthropic_base_url, api_key="sk-ant-test", max_retries=0, timeout=5
    )


def usage_header(**overrides: int) -> dict[str, str]:
    return {"X-Mock-Usage": json.dumps(overrides or USAGE)}


async def post(mock: MockUpstream, path: str, body: Any, headers: dict[str, str] | None = None) -> Any:
    async with (
        aiohttp.ClientSession() as session,
        session.post(mock.url + path, json=body, headers=headers) as resp,
    ):
        return resp.status, resp.headers.get("Content-Type", ""), await resp.read()


def sse_data(raw: bytes) -> list[Any]:
    out = []
    for line in raw.decode().splitlines():
        if line.startswith("data: ") and line != "data: [DONE]":
            out.append(json.loads(line[6:]))
    return out


# ---------------------------------------------------------------------------------------------- OpenAI


def test_openai_chat_json_usage_mapping(oai: openai.OpenAI, mock: MockUpstream) -> None:
    completion = oai.chat.completions.create(model="gpt-4o", messages=MESSAGES, extra_headers=usage_header())
    assert completion.choices[0].message.content == DEFAULT_TEXT
    assert completion.choices[0].finish_reason == "stop"
    assert completion.model == "gpt-4o"
    usage = completion.usage
    assert usage is not None
    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (1200, 80, 1280)
    assert usage.prompt_tokens_details and usage.prompt_tokens_details.cached_tokens == 200
    assert usage.completion_tokens_details and usage.completion_tokens_details.reasoning_tokens == 30
    recorded = mock.last_request
    assert (recorded.method, recorded.path) == ("POST", "/v1/chat/completions")
    assert recorded.header("authorization") == "Bearer sk-test"
    assert recorded.json()["messages"] == MESSAGES


def test_openai_chat_default_usage(oai: openai.OpenAI) -> None:
    usage = oai.chat.completions.create(model="gpt-4o", messages=MESSAGES).usage
    assert usage is not None
    assert (usage.prompt_tokens, usage.completion_tokens) == (DEFAULT_INPUT_TOKENS, DEFAULT_OUTPUT_TOKENS)


def test_openai_chat_stream_include_usage(oai: openai.OpenAI) -> None:
    chunks = list(
        oai.chat.completions.create(
            model="gpt-4o",
            messages=MESSAGES,
            stream=True,
            stream_options={"include_usage": True},
            extra_headers={"X-Mock-Chunks": "5", **usage_header()},
        )
    )
    content = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert "".join(content) == DEFAULT_TEXT and len(content) == 5
    *body, last = chunks
    assert last.choices == [] and last.usage is not None
    assert last.usage.prompt_tokens == 1200 and last.usage.completion_tokens == 80
    assert all(c.usage is None for c in body)
    assert body[-1].choices[0].finish_reason == "stop"


def test_openai_chat_stream_without_include_usage(mock: MockUpstream, oai: openai.OpenAI) -> None:
    chunks = list(oai.chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=True))
    assert all(c.choices for c in chunks)  # no usage-only chunk
    assert all(c.usage is None for c in chunks)
    raw = asyncio.run(
        post(mock, "/v1/chat/completions", {"model": "m", "messages": MESSAGES, "stream": True})
    )
    assert b'"usage"' not in raw[2] and raw[2].rstrip().endswith(b"data: [DONE]")


def test_openai_chat_usage_in_last_chunk(mock: MockUpstream) -> None:
    body = {"model": "m", "messages": MESSAGES, "stream": True}
    _, _, raw = asyncio.run(
        post(mock, "/v1/chat/completions", body, {"X-Mock-Scenario": "usage-in-last-chunk"})
    )
    events = sse_data(raw)
    assert events[-1]["choices"][0]["finish_reason"] == "stop"
    assert events[-1]["usage"]["prompt_tokens"] == DEFAULT_INPUT_TOKENS


def test_openai_chat_tool_call(oai: openai.OpenAI, mock: MockUpstream) -> None:
    tools: Any = [
        {"type": "function", "function": {"name": "get_weather", "parameters": WEATHER_TOOL}},
        {"type": "function", "function": {"name": "other", "parameters": {"type": "object"}}},
    ]
    message = (
        oai.chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "[mock:tool-call] weather?"}], tools=tools
        )
        .choices[0]
        .message
    )
    assert message.tool_calls and message.tool_calls[0].type == "function"
    call = message.tool_calls[0]
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "mock", "days": 3}

    # streamed, via header, accumulated by the SDK helper
    with oai.chat.completions.stream(
        model="gpt-4o", messages=MESSAGES, tools=tools, extra_headers={"X-Mock-Scenario": "tool-call"}
    ) as stream:
        final = stream.get_final_completion()
    assert final.choices[0].finish_reason == "tool_calls"
    streamed_call = (final.choices[0].message.tool_calls or [])[0]
    assert json.loads(streamed_call.function.arguments) == {"city": "mock", "days": 3}  # type: ignore[union-attr]

    # with the tool result appended, the mock answers with text
    follow_up: Any = [
        {"role": "user", "content": "[mock:tool-call] weather?"},
        {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
        {"role": "tool", "tool_call_id": call.id, "content": "sunny"},
    ]
    answer = oai.chat.completions.create(model="gpt-4o", messages=follow_up, tools=tools)
    assert answer.choices[0].message.content == DEFAULT_TEXT
    assert [r.path for r in mock.requests] == ["/v1/chat/completions"] * 3


def test_openai_responses_json_and_stream(oai: openai.OpenAI) -> None:
    response = oai.responses.create(model="gpt-5", input="hi", extra_headers=usage_header())
    assert response.output_text == DEFAULT_TEXT
    assert response.usage is not None
    assert response.usage.input_tokens == 1200 and response.usage.output_tokens == 80
    assert response.usage.input_tokens_details.cached_tokens == 200
    assert response.usage.output_tokens_details.reasoning_tokens == 30

    events = list(
        oai.responses.create(
            model="gpt-5",
            input="hi",
            stream=True,
            reasoning={"summary": "auto"},
            extra_headers=usage_header(),
        )
    )
    types = [e.type for e in events]
    assert types[:2] == ["response.created", "response.in_progress"]
    assert types[-1] == "response.completed"
    assert "response.reasoning_summary_text.delta" in types
    assert [e.sequence_number for e in events] == list(range(len(events)))
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text == DEFAULT_TEXT
    completed = events[-1].response  # type: ignore[union-attr]
    assert completed.usage is not None and completed.usage.input_tokens == 1200
    assert completed.output_text == DEFAULT_TEXT


def test_openai_responses_tool_call(oai: openai.OpenAI) -> None:
    tools: Any = [{"type": "function", "name": "get_weather", "parameters": WEATHER_TOOL, "strict": False}]
    response = oai.responses.create(model="gpt-5", input="[mock:tool-call]", tools=tools)
    call = response.output[0]
    assert call.type == "function_call"
    assert json.loads(call.arguments) == {"city": "mock", "days": 3}
    events = list(oai.responses.create(model="gpt-5", input="[mock:tool-call]", tools=tools, stream=True))
    args = "".join(e.delta for e in events if e.type == "response.function_call_arguments.delta")
    assert json.loads(args) == {"city": "mock", "days": 3}


def test_openai_embeddings_completions_models(oai: openai.OpenAI) -> None:
    embeddings = oai.embeddings.create(model="text-embedding-3-small", input=["a", "b"], dimensions=4)
    assert [len(d.embedding) for d in embeddings.data] == [4, 4]  # the SDK asked for base64
    assert embeddings.usage.prompt_tokens == DEFAULT_INPUT_TOKENS
    completion = oai.completions.create(model="gpt-3.5-turbo-instruct", prompt="hi")
    assert completion.choices[0].text == DEFAULT_TEXT
    assert completion.usage is not None and completion.usage.completion_tokens == DEFAULT_OUTPUT_TOKENS
    streamed = list(
        oai.completions.create(
            model="gpt-3.5-turbo-instruct", prompt="hi", stream=True, stream_options={"include_usage": True}
        )
    )
    assert "".join(c.choices[0].text for c in streamed if c.choices) == DEFAULT_TEXT
    assert streamed[-1].usage is not None and streamed[-1].choices == []
    assert "gpt-4o" in [m.id for m in oai.models.list()]


def test_gemini_openai_compatible_route(mock: MockUpstream) -> None:
    client = openai.OpenAI(base_url=mock.gemini_openai_base_url, api_key="g", max_retries=0)
    completion = client.chat.completions.create(model="gemini-2.5-flash", messages=MESSAGES)
    assert completion.choices[0].message.content == DEFAULT_TEXT
    assert mock.last_request.path == "/v1beta/openai/chat/completions"
    chunks = list(
        client.chat.completions.create(
            model="gemini-2.5-flash", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
        )
    )
    assert chunks[-1].usage is not None and chunks[-1].usage.prompt_tokens == DEFAULT_INPUT_TOKENS


# ------------------------------------------------------------------------------------------- Anthropic


def test_anthropic_json_cache_usage(claude: anthropic.Anthropic, mock: MockUpstream) -> None:
    message = claude.messages.create(
        model="claude-sonnet-4-6", max_tokens=100, messages=MESSAGES, extra_headers=usage_header()
    )
    assert message.content[0].type == "text" and message.content[0].text == DEFAULT_TEXT
    assert message.stop_reason == "end_turn"
    usage = message.usage
    # input 1200 = 700 uncached + 200 cache reads + 300 cache writes (100 of them 1h)
    assert (usage.input_tokens, usage.cache_read_input_tokens, usage.cache_creation_input_tokens) == (
        700,
        200,
        300,
    )
    assert usage.cache_creation is not None
    assert usage.cache_creation.ephemeral_5m_input_tokens == 200
    assert usage.cache_creation.ephemeral_1h_input_tokens == 100
    assert usage.output_tokens == 80
    # this SDK generation authenticates with a bearer token; older ones send x-api-key
    auth = mock.last_request.header("x-api-key") or mock.last_request.header("authorization") or ""
    assert auth.endswith("sk-ant-test")


def test_anthropic_stream(claude: anthropic.Anthropic, mock: MockUpstream) -> None:
    with claude.messages.stream(
        model="claude-sonnet-4-6", max_tokens=100, messages=MESSAGES, extra_headers=usage_header()
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == DEFAULT_TEXT
    assert final.usage.output_tokens == 80 and final.usage.input_tokens == 700
    assert final.usage.cache_read_input_tokens == 200
    _, content_type, raw = asyncio.run(
        post(mock, "/v1/messages", {"model": "m", "max_tokens": 5, "messages": MESSAGES, "stream": True})
    )
    assert content_type.startswith("text/event-stream")
    events = [line[7:] for line in raw.decode().splitlines() if line.startswith("event: ")]
    assert events[0] == "message_start" and events[-2:] == ["message_delta", "message_stop"]
    start, delta = sse_data(raw)[0], sse_data(raw)[-2]
    assert start["message"]["usage"]["output_tokens"] == 1  # provisional, like the real API
    assert delta["usage"]["output_tokens"] == DEFAULT_OUTPUT_TOKENS


def test_anthropic_thinking_and_tool_use_stream(claude: anthropic.Anthropic) -> None:
    tools: Any = [{"name": "get_weather", "description": "w", "input_schema": WEATHER_TOOL}]
    with claude.messages.stream(
        model="claude-sonnet-4-6",
        max_tokens=2000,
        thinking={"type": "enabled", "budget_tokens": 1024},
        tools=tools,
        messages=[{"role": "user", "content": "[mock:tool-call] weather?"}],
    ) as stream:
        final = stream.get_final_message()
    thinking, tool_use = final.content
    assert thinking.type == "thinking" and thinking.thinking and thinking.signature
    assert tool_use.type == "tool_use" and tool_use.name == "get_weather"
    assert tool_use.input == {"city": "mock", "days": 3}
    assert final.stop_reason == "tool_use"

    follow_up: Any = [
        {"role": "user", "content": "[mock:tool-call] weather?"},
        {"role": "assistant", "content": [tool_use.model_dump()]},
        {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": tool_use.id, "content": "sunny"}],
        },
    ]
    answer = claude.messages.create(
        model="claude-sonnet-4-6", max_tokens=100, tools=tools, messages=follow_up
    )
    assert answer.content[-1].type == "text" and answer.stop_reason == "end_turn"


def test_anthropic_count_tokens(claude: anthropic.Anthropic) -> None:
    counted = claude.messages.count_tokens(
        model="claude-sonnet-4-6", messages=MESSAGES, extra_headers={"X-Mock-Usage": '{"input_tokens": 42}'}
    )
    assert counted.input_tokens == 42


# ---------------------------------------------------------------------------------------------- Gemini

GEMINI_BODY = {"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}


def test_gemini_generate_content(mock: MockUpstream) -> None:
    status, _, raw = asyncio.run(
        post(mock, "/v1beta/models/gemini-2.5-flash:generateContent?key=k", GEMINI_BODY, usage_header())
    )
    assert status == 200
    data = json.loads(raw)
    assert data["candidates"][0]["content"]["parts"] == [{"text": DEFAULT_TEXT}]
    assert data["candidates"][0]["finishReason"] == "STOP"
    assert data["modelVersion"] == "gemini-2.5-flash"
    meta = data["usageMetadata"]
    # input 1200 = promptTokenCount 1150 (incl. 200 cached) + toolUsePromptTokenCount 50
    assert meta["promptTokenCount"] == 1150 and meta["toolUsePromptTokenCount"] == 50
    assert meta["cachedContentTokenCount"] == 200
    # output 80 = candidatesTokenCount 50 + thoughtsTokenCount 30
    assert meta["candidatesTokenCount"] == 50 and meta["thoughtsTokenCount"] == 30
    assert meta["totalTokenCount"] == 1280
    assert mock.last_request.query == "key=k"
    assert mock.last_request.query_params == {"key": "k"}


def test_gemini_stream_sse(mock: MockUpstream) -> None:
    path = "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse"
    _, content_type, raw = asyncio.run(post(mock, path, GEMINI_BODY, {"X-Mock-Chunks": "4"}))
    assert content_type.startswith("text/event-stream")
    assert raw.count(b"\r\n\r\n") == 4
    chunks = sse_data(raw)
    assert "".join(c["candidates"][0]["content"]["parts"][0]["text"] for c in chunks) == DEFAULT_TEXT
    running = [c["usageMetadata"].get("candidatesTokenCount", 0) for c in chunks]
    assert running == sorted(running) and running[-1] == DEFAULT_OUTPUT_TOKENS
    assert "finishReason" in chunks[-1]["candidates"][0]
    assert "finishReason" not in chunks[0]["candidates"][0]


def test_gemini_stream_json_array_arrives_in_pieces(mock: MockUpstream) -> None:
    async def run() -> tuple[list[bytes], str]:
        url = mock.url + "/v1beta/models/gemini-2.5-flash:streamGenerateContent"
        headers = {"X-Mock-Delay-Ms": "30", "X-Mock-Scenario": "thinking"}
        async with (
            aiohttp.ClientSession() as session,
            session.post(url, json=GEMINI_BODY, headers=headers) as r,
        ):
            return [piece async for piece in r.content.iter_any()], r.headers["Content-Type"]

    pieces, content_type = asyncio.run(run())
    assert content_type.startswith("application/json")
    assert len(pieces) >= 4  # thought chunk + 3 text chunks + closing bracket, written apart
    chunks = json.loads(b"".join(pieces))
    assert chunks[0]["candidates"][0]["content"]["parts"][0]["thought"] is True
    assert chunks[-1]["usageMetadata"]["thoughtsTokenCount"] == DEFAULT_REASONING_TOKENS
    assert (
        chunks[-1]["usageMetadata"]["candidatesTokenCount"]
        == DEFAULT_OUTPUT_TOKENS - DEFAULT_REASONING_TOKENS
    )


GEMINI_SCHEMA = {"type": "OBJECT", "properties": {"city": {"type": "STRING"}}, "required": ["city"]}


GEMINI_SCHEMA = {"type": "OBJECT", "properties": {"city": {"type": "STRING"}}, "required": ["city"]}


def test_gemini_function_call(mock: MockUpstream) -> None:
    body = {
        **GEMINI_BODY,
        "tools": [{"functionDeclarations": [{"name": "get_weather", "parameters": GEMINI_SCHEMA}]}],
    }
    _, _, raw = asyncio.run(
        post(mock, "/v1beta/models/gemini-2.5-flash:generateContent", body, {"X-Mock-Scenario": "tool-call"})
    )
    part = json.loads(raw)["candidates"][0]["content"]["parts"][0]
    assert part == {"functionCall": {"name": "get_weather", "args": {"city": "mock"}}}


# ------------------------------------------------------------------------------------ failure scenarios


def test_error_status_in_each_provider_format(
    mock: MockUpstream, oai: openai.OpenAI, claude: anthropic.Anthropic
) -> None:
    with pytest.raises(openai.InternalServerError) as openai_error:
        oai.chat.completions.create(model="gpt-4o", messages=MESSAGES, extra_headers={"X-Mock-Status": "500"})
    assert openai_error.value.body["type"] == "server_error"  # type: ignore[index]

    with pytest.raises(anthropic.RateLimitError) as anthropic_error:
        claude.messages.create(
            model="claude-sonnet-4-6",
            max_tokens=5,
            messages=MESSAGES,
            extra_headers={"X-Mock-Status": "429", "X-Mock-Retry-After": "7"},
        )
    assert anthropic_error.value.body["error"]["type"] == "rate_limit_error"  # type: ignore[index]
    assert anthropic_error.value.response.headers["retry-after"] == "7"

    status, _, raw = asyncio.run(
        post(mock, "/v1beta/models/gemini-2.5-flash:generateContent", GEMINI_BODY, {"X-Mock-Status": "503"})
    )
    assert status == 503 and json.loads(raw)["error"]["status"] == "UNAVAILABLE"


def test_cut_stream_is_an_error_not_a_clean_end(
    mock: MockUpstream, oai: openai.OpenAI, claude: anthropic.Anthropic
) -> None:
    cut = {"X-Mock-Scenario": "cut-stream"}
    received = []
    with pytest.raises(openai.APIConnectionError):
        for chunk in oai.chat.completions.create(
            model="gpt-4o", messages=MESSAGES, stream=True, extra_headers=cut
        ):
            received.append(chunk)
    assert received  # some events arrived before the cut

    with pytest.raises((anthropic.APIConnectionError, httpx2.RemoteProtocolError)):
        for _ in claude.messages.create(
            model="claude-sonnet-4-6", max_tokens=5, messages=MESSAGES, stream=True, extra_headers=cut
        ):
            pass

    async def raw_read(path: str, body: Any) -> bytes:
        async with (
            aiohttp.ClientSession() as session,
            session.post(mock.url + path, json=body, headers=cut) as r,
        ):
            return await r.read()

    gemini = "/v1beta/models/gemini-2.5-flash:streamGenerateContent"
    for path in (gemini, gemini + "?alt=sse", "/v1/chat/completions"):  # the last one: non-streamed JSON
        with pytest.raises(aiohttp.ClientPayloadError):
            asyncio.run(raw_read(path, {**GEMINI_BODY, "model": "m", "messages": MESSAGES}))


def test_stream_error_events(mock: MockUpstream, oai: openai.OpenAI, claude: anthropic.Anthropic) -> None:
    headers = {"X-Mock-Scenario": "stream-error", "X-Mock-Error-Message": "boom"}
    with pytest.raises(openai.APIError, match="boom"):
        list(
            oai.chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=True, extra_headers=headers)
        )
    with pytest.raises(anthropic.APIStatusError) as error:
        list(
            claude.messages.create(
                model="claude-sonnet-4-6", max_tokens=5, messages=MESSAGES, stream=True, extra_headers=headers
            )
        )
    assert error.value.body["error"]["type"] == "overloaded_error"  # type: ignore[index]
    _, _, raw = asyncio.run(
        post(
            mock,
            "/v1beta/models/g:streamGenerateContent?alt=sse",
            GEMINI_BODY,
            {"X-Mock-Scenario": "stream-error"},
        )
    )
    assert sse_data(raw)[-1]["error"]["code"] == 500
    _, _, raw = asyncio.run(
        post(mock, "/v1beta/models/g:streamGenerateContent", GEMINI_BODY, {"X-Mock-Scenario": "stream-error"})
    )
    assert "error" in json.loads(raw)[-1]  # still a well-formed JSON array


def test_hang_and_hang_mid_stream_time_out(mock: MockUpstream) -> None:
    async def attempt(scenario: str, received: list[bytes]) -> None:
        timeout = aiohttp.ClientTimeout(total=0.3)
        async with aiohttp.ClientSession(timeout=timeout) as session, session.post(
            mock.url + "/v1/messages",
            json={"model": "m", "max_tokens": 5, "messages": MESSAGES, "stream": True},
            headers={"X-Mock-Scenario": scenario},
        ) as resp:
            async for piece in resp.content.iter_any():
                received.append(piece)

    for scenario, expect_data in (("hang", False), ("hang-mid-stream", True)):
        received: list[bytes] = []
        with pytest.raises(asyncio.TimeoutError):
            asyncio.run(attempt(scenario, received))
        assert bool(received) is expect_data, scenario
        if expect_data:
            assert b"message_start" in b"".join(received)
            assert b"message_stop" not in b"".join(received)


def test_slow_stream(oai: openai.OpenAI) -> None:
    started = time.monotonic()
    list(
        oai.chat.completions.create(
            model="gpt-4o",
            messages=[{"role": "user", "content": "[mock:slow] [mock:delay-ms=40]"}],
            stream=True,
        )
    )
    # 6 events (role, 3 content, finish, [DONE]) -> 5 pauses
    assert time.monotonic() - started >= 0.2


def test_no_usage(mock: MockUpstream, oai: openai.OpenAI) -> None:
    headers = {"X-Mock-Scenario": "no-usage"}
    assert oai.chat.completions.create(model="gpt-4o", messages=MESSAGES, extra_headers=headers).usage is None
    chunks = list(
        oai.chat.completions.create(
            model="gpt-4o",
            messages=MESSAGES,
            stream=True,
            stream_options={"include_usage": True},
            extra_headers=headers,
        )
    )
    assert all(c.choices for c in chunks)
    body = {"model": "m", "max_tokens": 5, "messages": MESSAGES, "stream": True}
    _, _, raw = asyncio.run(post(mock, "/v1/messages", body, headers))
    assert b'"usage"' not in raw
    _, _, raw = asyncio.run(post(mock, "/v1beta/models/g:generateContent", GEMINI_BODY, headers))
    assert "usageMetadata" not in json.loads(raw)


def test_raw_usage_is_passed_verbatim(oai: openai.OpenAI) -> None:
    completion = oai.chat.completions.create(
        model="gpt-4o",
        messages=MESSAGES,
        extra_headers={"X-Mock-Raw-Usage": '{"prompt_tokens": 7, "completion_tokens": 1, "total_tokens": 8}'},
    )
    assert completion.usage is not None and completion.usage.prompt_tokens == 7
    assert completion.usage.prompt_tokens_details is None


def test_bad_mock_settings_are_a_400(mock: MockUpstream, oai: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError, match="mock: unknown scenario"):
        oai.chat.completions.create(model="m", messages=MESSAGES, extra_headers={"X-Mock-Scenario": "nope"})
    with pytest.raises(openai.BadRequestError, match="exceed input_tokens"):
        oai.chat.completions.create(
            model="m", messages=MESSAGES, extra_headers=usage_header(cached_tokens=500)
        )
    with pytest.raises(MockConfigError):
        mock.configure(scenario="nope")


# ------------------------------------------------------------------------------ control and recording


def test_recording_and_control_routes(mock: MockUpstream, oai: openai.OpenAI) -> None:
    oai.chat.completions.create(model="gpt-4o", messages=MESSAGES, extra_headers={"X-Custom": "1"})
    with httpx.Client(base_url=mock.url) as client:
        client.post("/v1beta/models/gemini-2.5-flash:generateContent?alt=json", json=GEMINI_BODY)
        client.post("/not/a/route", content=b"\x00raw")
        recorded = client.get("/_mock/requests").json()
        assert [r["path"] for r in recorded] == [
            "/v1/chat/completions",
            "/v1beta/models/gemini-2.5-flash:generateContent",
            "/not/a/route",
        ]
        assert recorded[0]["headers"]["x-custom"] == "1"
        assert recorded[0]["json"]["model"] == "gpt-4o"
        assert recorded[1]["query"] == "alt=json" and recorded[1]["query_params"] == {"alt": "json"}
        assert recorded[0]["response"]["status"] == 200
        assert mock.requests[2].body == b"\x00raw"
        assert mock.requests[2].response is not None and mock.requests[2].response.status == 404

        # what the mock answered is recorded too, byte for byte (streams included)
        streamed = client.post(
            "/v1/messages", json={"model": "m", "max_tokens": 5, "messages": MESSAGES, "stream": True}
        )
        [sent] = mock.responses[-1:]
        assert (sent.status, sent.outcome, sent.body) == (200, "complete", streamed.content)
        assert (
            sent.headers["content-type"]
            == streamed.headers["Content-Type"]
            == "text/event-stream; charset=utf-8"
        )
        with (
            pytest.raises(httpx.RemoteProtocolError),
            client.stream(
                "POST",
                "/v1/chat/completions",
                json={"model": "m", "messages": MESSAGES, "stream": True},
                headers={"X-Mock-Scenario": "cut-stream"},
            ) as cut,
        ):
            received = b""
            for piece in cut.iter_bytes():
                received += piece
        sent = mock.responses[-1]
        assert sent.outcome == "cut" and sent.body == received

        assert client.put("/_mock/defaults", json={"scenario": "no-usage"}).status_code == 200
        assert (
            client.post("/v1/chat/completions", json={"model": "m", "messages": MESSAGES}).json().get("usage")
            is None
        )
        assert client.put("/_mock/defaults", json={"scenario": "bogus"}).status_code == 400
        client.delete("/_mock/defaults")
        client.delete("/_mock/requests")
    assert mock.requests == []


def test_configure_defaults_and_precedence(oai: openai.OpenAI, mock: MockUpstream) -> None:
    mock.configure(usage={"input_tokens": 10, "output_tokens": 2}, text="from defaults")
    completion = oai.chat.completions.create(model="m", messages=MESSAGES)
    assert completion.choices[0].message.content == "from defaults"
    assert completion.usage is not None and completion.usage.prompt_tokens == 10
    # a prompt marker beats the defaults, a header beats the marker; usage keys merge
    completion = oai.chat.completions.create(
        model="m",
        messages=[
            {"role": "system", "content": "[mock:text=from system]"},
            {"role": "user", "content": '[mock:text=from marker] [mock:usage={"output_tokens": 3}]'},
        ],
        extra_headers={"X-Mock-Usage": '{"cached_tokens": 4}'},
    )
    assert completion.choices[0].message.content == "from marker"
    assert completion.usage is not None
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (10, 3)
    assert (
        completion.usage.prompt_tokens_details and completion.usage.prompt_tokens_details.cached_tokens == 4
    )
    assert (
        oai.chat.completions.create(model="m", messages=MESSAGES, extra_headers={"X-Mock-Text": "hdr"})
        .choices[0]
        .message.content
        == "hdr"
    )


async def test_async_context_manager_in_running_loop() -> None:
    async with MockUpstream(text="async") as server:
        client = openai.AsyncOpenAI(base_url=server.openai_base_url, api_key="k", max_retries=0)
        completion = await client.chat.completions.create(model="m", messages=MESSAGES)
        assert completion.choices[0].message.content == "async"
        await client.close()


# -------------------------------------------------------------------------------- pydantic-ai agents


class City(BaseModel):
    name: str
    population: int


def _pydantic_ai_models(mock: MockUpstream) -> dict[str, Any]:
    from pydantic_ai.models.anthropic import AnthropicModel
    from pydantic_ai.models.openai import OpenAIChatModel, OpenAIResponsesModel
    from pydantic_ai.providers.anthropic import AnthropicProvider
    from pydantic_ai.providers.openai import OpenAIProvider

    return {
        "openai-chat": OpenAIChatModel(
            "gpt-4o", provider=OpenAIProvider(base_url=mock.openai_base_url, api_key="k")
        ),
        "openai-responses": OpenAIResponsesModel(
            "gpt-4o", provider=OpenAIProvider(base_url=mock.openai_base_url, api_key="k")
        ),
        "anthropic": AnthropicModel(
            "claude-sonnet-4-6", provider=AnthropicProvider(base_url=mock.anthropic_base_url, api_key="k")
        ),
        "gemini-openai": OpenAIChatModel(
            "gemini-2.5-flash", provider=OpenAIProvider(base_url=mock.gemini_openai_base_url, api_key="k")
        ),
    }


async def test_pydantic_ai_agents_tools_and_structured_output(mock: MockUpstream) -> None:
    from pydantic_ai import Agent

    calls: list[str] = []

    def get_weather(city: str) -> str:
        calls.append(city)
        return f"sunny in {city}"

    for name, model in _pydantic_ai_models(mock).items():
        calls.clear()
        agent = Agent(model, tools=[get_weather])
        result = await agent.run("[mock:tool-call] weather?")
        assert result.output == DEFAULT_TEXT, name
        assert calls == ["mock"], name
        assert result.usage.requests == 2 and result.usage.input_tokens == 2 * DEFAULT_INPUT_TOKENS, name

        async with agent.run_stream("[mock:tool-call] weather?") as stream:
            assert await stream.get_output() == DEFAULT_TEXT, name

        structured = Agent(model, output_type=City, tools=[get_weather])
        assert (await structured.run("a city")).output == City(name="mock", population=1), name
        async with structured.run_stream("[mock:tool-call] a city") as stream:
            assert await stream.get_output() == City(name="mock", population=1), name


# ------------------------------------------------------------------------------------------ helpers


def test_example_from_schema() -> None:
    schema = {
        "$defs": {"Kind": {"enum": ["a", "b"]}},
        "type": "object",
        "properties": {
            "when": {"type": "string", "format": "date-time"},
            "kind": {"$ref": "#/$defs/Kind"},
            "tags": {"type": "array", "items": {"type": "string"}, "minItems": 1},
            "maybe": {"anyOf": [{"type": "null"}, {"type": "number", "minimum": 5}]},
            "flag": {"type": "boolean"},
            "optional": {"type": "string"},
        },
        "required": ["when", "kind", "tags", "maybe", "flag"],
    }
    assert example_from_schema(schema) == {
        "when": "2024-01-01T00:00:00Z",
        "kind": "a",
        "tags": ["mock"],
        "maybe": 5.0,
        "flag": True,
    }
    assert example_from_schema({}) == {}
    assert split_text("abcdefg", 3) == ["abc", "de", "fg"]
    assert split_text("ab", 5) == ["a", "b"]
