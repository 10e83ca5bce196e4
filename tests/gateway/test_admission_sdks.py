"""proxy.max_in_flight through a real gateway: the official SDKs see the refusal as their usual
503 error (with Retry-After, which their retries honour), the stream already flowing finishes, and
every refusal has its row."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import anthropic
import openai
import pytest
from google import genai
from google.genai import errors as genai_errors
from google.genai import types as genai_types

from tests.support import GatewayProcess

MESSAGES = [{"role": "user", "content": "Hi"}]
SLOW = {"X-Mock-Scenario": "slow", "X-Mock-Delay-Ms": "200", "X-Mock-Chunks": "5"}


@pytest.fixture
async def one_at_a_time(mock_upstream: object, tmp_path: Path) -> AsyncIterator[GatewayProcess]:
    process = GatewayProcess(database_url=f"sqlite:///{tmp_path / 'majordomo.db'}",
                             upstream_url=mock_upstream.url, workdir=tmp_path,  # type: ignore[attr-defined]
                             extra_env={"MAJORDOMO_PROXY_MAX_IN_FLIGHT": "1"}).start()
    yield process
    process.stop()


async def _slow_stream(gateway: GatewayProcess, started: asyncio.Event) -> tuple[int, bytes]:
    body = {"model": "gpt-4o", "messages": MESSAGES, "stream": True}
    headers = {"X-Majordomo-Key": gateway.key, "Authorization": "Bearer sk-test-0123456789", **SLOW}
    async with aiohttp.ClientSession() as session, session.post(
            gateway.url + "/v1/chat/completions", json=body, headers=headers) as response:
        first = await response.content.readany()
        started.set()
        return response.status, first + await response.read()


async def test_sdks_get_their_own_503_while_a_stream_holds_the_only_slot(one_at_a_time: GatewayProcess) -> None:
    gateway = one_at_a_time
    started = asyncio.Event()
    stream = asyncio.ensure_future(_slow_stream(gateway, started))
    await asyncio.wait_for(started.wait(), timeout=10)
    began = time.monotonic()

    oai = openai.AsyncOpenAI(base_url=gateway.url + "/v1", api_key="sk-test-0123456789", max_retries=0,
                             default_headers={"X-Majordomo-Key": gateway.key})
    with pytest.raises(openai.InternalServerError) as oai_error:
        await oai.chat.completions.create(model="gpt-4o", messages=MESSAGES)  # type: ignore[arg-type]
    assert oai_error.value.status_code == 503 and oai_error.value.code == "overloaded"
    assert oai_error.value.response.headers["retry-after"] == "1"

    ant = anthropic.AsyncAnthropic(base_url=gateway.url, api_key="sk-ant-test-0123456789", max_retries=0,
                                   default_headers={"X-Majordomo-Key": gateway.key})
    with pytest.raises(anthropic.InternalServerError) as ant_error:
        await ant.messages.create(model="claude-sonnet-4-20250514", max_tokens=16,
                                  messages=MESSAGES)  # type: ignore[arg-type]
    assert ant_error.value.status_code == 503
    assert ant_error.value.response.json()["error"]["type"] == "overloaded_error"

    gem = genai.Client(api_key="AIza-test-0123456789", http_options=genai_types.HttpOptions(
        base_url=gateway.url, headers={"X-Majordomo-Key": gateway.key}))
    with pytest.raises(genai_errors.ServerError) as gem_error:
        await gem.aio.models.generate_content(model="gemini-2.5-flash", contents="Hello!")
    assert (gem_error.value.code, gem_error.value.status) == (503, "UNAVAILABLE")
    refused_in = time.monotonic() - began

    status, body = await asyncio.wait_for(stream, timeout=10)
    assert status == 200 and body.rstrip().endswith(b"data: [DONE]"), body[-200:]
    assert refused_in < 0.8, f"three refusals took {refused_in:.2f}s: they must not wait for the stream"

    rows: list[tuple[object, ...]] = []
    for _ in range(100):
        rows = await gateway.query("SELECT provider, status_code, error_message, majordomo_api_key_id "
                                   "FROM llm_requests ORDER BY requested_at")
        if len(rows) == 4:
            break
        await asyncio.sleep(0.05)
    assert [(r[0], r[1]) for r in rows] == [("openai", 200), ("openai", 503), ("anthropic", 503), ("gemini", 503)]
    assert all(str(r[2]).startswith("overloaded") and r[3] == gateway.key_id for r in rows[1:]), rows
