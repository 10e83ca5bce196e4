"""``aborted`` means the client left before the stream's terminal event had been sent to it.

Many clients stop reading at the terminal event (``data: [DONE]``, ``message_stop``...) and close
the connection before the body's own end (the chunked encoding's last chunk) arrives: the
``openai`` SDK's synchronous stream, and through it LangChain's ChatOpenAI, among others.  Their
streams were read to the end and must not be recorded as aborted; a client that leaves earlier,
even one event earlier, still is.

``X-Mock-End-Delay-Ms`` holds the upstream's body end back after its last event, so that every
such client closes before the end arrives: deterministic.  The SDK tests also run with the end
1 ms behind, many times, so that the race itself shows.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import anthropic
import openai
import orjson
import pytest
from langchain_openai import ChatOpenAI
from pydantic import SecretStr

from tests.support import GatewayProcess
from tests.support.client import read_until_and_close
from tests.support.upstream import MockUpstream

CHAT = {"model": "gpt-4.1", "messages": [{"role": "user", "content": "Hello!"}], "stream": True}
MESSAGES = {"model": "claude-sonnet-4-20250514", "max_tokens": 256, "messages": [{"role": "user", "content": "Hi"}],
            "stream": True}
USAGE = {"input_tokens": 1200, "output_tokens": 300}
END_DELAY = {"X-Mock-End-Delay-Ms": "250"}
# The body's end 1 ms after the last event, about as long as a client takes to read the event and
# close: which comes first is a race, run many times.  Lost one time in four, all of them coming out
# right by luck has a chance below 1e-4.
RACE = {"X-Mock-End-Delay-Ms": "1"}
RACE_ROUNDS = 32


@pytest.fixture(scope="module")
async def gw(mock_upstream: MockUpstream, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[GatewayProcess]:
    workdir = tmp_path_factory.mktemp("aborted")
    process = GatewayProcess(database_url=f"sqlite:///{workdir / 'm.db'}", upstream_url=mock_upstream.url,
                             workdir=workdir).start()
    yield process
    process.stop()


@dataclass
class Terminal:
    name: str
    path: str
    body: dict[str, Any]
    #: what the raw client waits for: the terminal event as the client gets it
    until: bytes
    #: an event shortly before it, for the client that leaves one event too early
    before: bytes
    headers: dict[str, str] = field(default_factory=dict)


TERMINALS = [
    Terminal("openai-chat", "/v1/chat/completions", {**CHAT, "stream_options": {"include_usage": True}},
             b"data: [DONE]", b'"choices":[]'),
    # The gateway asks for usage itself and hides the chunk it adds: [DONE] is still the end.
    Terminal("openai-chat-injected-usage", "/v1/chat/completions", CHAT, b"data: [DONE]", b'"finish_reason":"stop"'),
    Terminal("openai-responses", "/v1/responses", {"model": "o3", "input": "Hi", "stream": True},
             b"event: response.completed", b"event: response.output_item.done"),
    Terminal("anthropic-messages", "/v1/messages", MESSAGES, b"event: message_stop", b"event: message_delta"),
    Terminal("gemini-sse", "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse",
             {"contents": [{"role": "user", "parts": [{"text": "Hello!"}]}]}, b'"finishReason"',
             b'"candidatesTokenCount"'),
    # The client gets OpenAI's [DONE], translated from Anthropic's message_stop.
    Terminal("anthropic-openai", "/v1/chat/completions", {**CHAT, "model": "claude-sonnet-4-20250514"},
             b"data: [DONE]", b'"finish_reason":"stop"', {"X-Majordomo-Provider": "anthropic-openai"}),
]


def _headers(terminal: Terminal, **extra: str) -> dict[str, str]:
    return {**terminal.headers, "X-Mock-Usage": orjson.dumps(USAGE).decode(), **extra}


@pytest.mark.parametrize("terminal", TERMINALS, ids=[t.name for t in TERMINALS])
async def test_a_client_that_hangs_up_right_after_the_terminal_event_did_not_abort(
        gw: GatewayProcess, terminal: Terminal) -> None:
    read = await read_until_and_close(gw, terminal.path, terminal.body, _headers(terminal, **END_DELAY),
                                      terminal.until)
    assert read.status == 200
    assert not read.complete, "the body ended before the client left: the test proves nothing"
    row = await gw.row(read.request_id)
    assert (row["streamed"], row["aborted"], row["usage_source"]) == (True, False, "reported")
    assert (row["input_tokens"], row["output_tokens"]) == (1200, 300)


@pytest.mark.parametrize("terminal", TERMINALS, ids=[t.name for t in TERMINALS])
async def test_a_client_that_hangs_up_one_event_before_the_end_aborted(gw: GatewayProcess, terminal: Terminal) -> None:
    # 150 ms between events: the terminal event is still upstream when the client leaves.
    read = await read_until_and_close(gw, terminal.path, terminal.body,
                                      _headers(terminal, **{"X-Mock-Delay-Ms": "150"}), terminal.before)
    assert terminal.until not in read.body
    row = await gw.row(read.request_id, timeout=20)
    assert (row["streamed"], row["aborted"]) == (True, True)


async def test_a_client_that_leaves_mid_stream_aborted(gw: GatewayProcess) -> None:
    read = await read_until_and_close(gw, "/v1/chat/completions", CHAT,
                                      {"X-Mock-Delay-Ms": "100", "X-Mock-Chunks": "10"}, b'"role":"assistant"')
    row = await gw.row(read.request_id, timeout=20)
    assert (row["aborted"], row["usage_source"]) == (True, "reported")


async def _rows(gw: GatewayProcess, ids: list[str]) -> list[dict[str, Any]]:
    return [await gw.row(request_id) for request_id in ids]


def _openai(gw: GatewayProcess, **headers: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.url + "/v1", api_key="sk-test-aborted", max_retries=0,
                         default_headers={"X-Majordomo-Key": gw.key, **headers})


def _sync_streams(gw: GatewayProcess, rounds: int, **headers: str) -> list[str]:
    ids = []
    with _openai(gw, **headers) as client:
        for _ in range(rounds):
            stream = client.chat.completions.create(model="gpt-4.1", messages=[{"role": "user", "content": "Hi"}],
                                                    stream=True, stream_options={"include_usage": True})
            chunks = list(stream)  # the SDK stops at [DONE] and closes the response
            assert chunks[-1].usage is not None
            ids.append(stream.response.headers["x-majordomo-request-id"])
    return ids


@pytest.mark.parametrize(("rounds", "headers"), [(4, END_DELAY), (RACE_ROUNDS, RACE)], ids=["end-delayed", "race"])
async def test_openai_sdk_sync_streams_read_to_the_end_are_not_aborted(
        gw: GatewayProcess, rounds: int, headers: dict[str, str]) -> None:
    ids = await asyncio.to_thread(_sync_streams, gw, rounds, **headers)
    rows = await _rows(gw, ids)
    assert [r["aborted"] for r in rows] == [False] * rounds
    assert {r["usage_source"] for r in rows} == {"reported"}


@pytest.mark.parametrize(("rounds", "headers"), [(4, END_DELAY), (RACE_ROUNDS, RACE)], ids=["end-delayed", "race"])
async def test_openai_sdk_async_streams_read_to_the_end_are_not_aborted(
        gw: GatewayProcess, rounds: int, headers: dict[str, str]) -> None:
    ids = []
    async with openai.AsyncOpenAI(base_url=gw.url + "/v1", api_key="sk-test-aborted", max_retries=0,
                                  default_headers={"X-Majordomo-Key": gw.key, **headers}) as client:
        for _ in range(rounds):
            stream = await client.chat.completions.create(
                model="gpt-4.1", messages=[{"role": "user", "content": "Hi"}], stream=True)
            async for _chunk in stream:
                pass
            ids.append(stream.response.headers["x-majordomo-request-id"])
    rows = await _rows(gw, ids)
    assert [r["aborted"] for r in rows] == [False] * rounds


def _anthropic_streams(gw: GatewayProcess, rounds: int, **headers: str) -> list[str]:
    ids = []
    with anthropic.Anthropic(base_url=gw.url, api_key="sk-ant-test-aborted", max_retries=0,
                             default_headers={"X-Majordomo-Key": gw.key, **headers}) as client:
        for _ in range(rounds):
            stream = client.messages.create(model="claude-sonnet-4-20250514", max_tokens=64,
                                            messages=[{"role": "user", "content": "Hi"}], stream=True)
            for event in stream:
                if event.type == "message_stop":
                    break  # as an application that has what it wants does
            stream.close()
            ids.append(stream.response.headers["x-majordomo-request-id"])
    return ids


async def test_anthropic_sdk_sync_streams_read_to_the_end_are_not_aborted(gw: GatewayProcess) -> None:
    ids = await asyncio.to_thread(_anthropic_streams, gw, 4, **END_DELAY)
    rows = await _rows(gw, ids)
    assert [r["aborted"] for r in rows] == [False] * 4


def _langchain_streams(gw: GatewayProcess, rounds: int, **headers: str) -> list[str]:
    model = ChatOpenAI(model="gpt-4.1", base_url=gw.url + "/v1", api_key=SecretStr("sk-test-aborted"), max_retries=0,
                       stream_usage=True, default_headers={"X-Majordomo-Key": gw.key, **headers})
    return ["".join(str(chunk.content) for chunk in model.stream("Hi")) for _ in range(rounds)]


@pytest.mark.parametrize(("rounds", "headers"), [(3, END_DELAY), (RACE_ROUNDS // 2, RACE)],
                         ids=["end-delayed", "race"])
async def test_langchain_chat_openai_streams_are_not_aborted(gw: GatewayProcess, rounds: int,
                                                             headers: dict[str, str]) -> None:
    run = uuid.uuid4().hex
    texts = await asyncio.to_thread(_langchain_streams, gw, rounds, **{**headers, "X-Majordomo-Run": run})
    assert texts == ["Hello from the mock upstream."] * rounds
    rows: list[tuple[Any, ...]] = []
    for _ in range(200):  # until the writer has flushed them all
        rows = await gw.query("SELECT aborted, usage_source FROM llm_requests WHERE raw_metadata ->> 'Run' = ?", run)
        if len(rows) == rounds:
            break
        await asyncio.sleep(0.05)
    assert rows == [(0, "reported")] * rounds
