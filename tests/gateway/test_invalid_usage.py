"""Usage that is not usage: a count that is not a whole number from 0 to MAX_TOKEN_COUNT (negative,
1e300, 2^63, 2^64, a string, a boolean, a fraction), or a cost the cost columns cannot hold.

Such a row says ``usage_source = 'invalid'`` with the raw values in ``error_message``, no tokens
and no cost, on both databases alike: never a silent 0 tokens and $0, never a crash, never a row
one database refuses and the other keeps.  The client's answer is relayed whole, the
anthropic-openai translation included (a ``stop_reason: []`` or a count of 1e300 used to raise a
TypeError mid-answer and cut the client's 200).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import openai
import pytest
from majordomo_gateway.usage import MAX_TOKEN_COUNT

from tests.support import GatewayProcess
from tests.support.client import post
from tests.support.upstream import DEFAULT_TEXT, MockUpstream

CHAT = {"model": "gpt-4.1", "messages": [{"role": "user", "content": "Hi"}]}
STREAM_CHAT = {**CHAT, "stream": True, "stream_options": {"include_usage": True}}
MESSAGES = {"model": "claude-sonnet-4-20250514", "max_tokens": 64, "messages": [{"role": "user", "content": "Hi"}]}
GEMINI = {"contents": [{"role": "user", "parts": [{"text": "Hi"}]}]}
GEMINI_PATH = "/v1beta/models/gemini-2.5-flash"

# (surface, path, body, raw usage object, what error_message must show)
BAD = [
    ("chat-negative", "/v1/chat/completions", CHAT, {"prompt_tokens": -5, "completion_tokens": 10},
     "prompt_tokens=-5"),
    ("chat-stream-1e300", "/v1/chat/completions", STREAM_CHAT, {"prompt_tokens": 5, "completion_tokens": 1e300},
     "completion_tokens=1e+300"),
    ("chat-2^63", "/v1/chat/completions", CHAT, {"prompt_tokens": 2**63, "completion_tokens": 1},
     f"prompt_tokens={2**63}"),
    ("chat-2^64-as-float", "/v1/chat/completions", CHAT, {"prompt_tokens": 2.0**64, "completion_tokens": 1},
     "prompt_tokens=1.8446744073709552e+19"),
    ("chat-nested-string", "/v1/chat/completions", STREAM_CHAT,
     {"prompt_tokens": 5, "completion_tokens": 1, "prompt_tokens_details": {"cached_tokens": "3"}},
     "prompt_tokens_details.cached_tokens='3'"),
    ("responses-boolean", "/v1/responses", {"model": "o3", "input": "Hi", "stream": True},
     {"input_tokens": True, "output_tokens": 4}, "input_tokens=True"),
    ("messages-fraction", "/v1/messages", MESSAGES, {"input_tokens": 10, "output_tokens": 2.5}, "output_tokens=2.5"),
    ("messages-stream-1e300", "/v1/messages", {**MESSAGES, "stream": True},
     {"input_tokens": 10, "output_tokens": 1e300, "cache_read_input_tokens": -1},
     "cache_read_input_tokens=-1, output_tokens=1e+300"),
    ("messages-over-the-cap", "/v1/messages", MESSAGES, {"input_tokens": MAX_TOKEN_COUNT + 1, "output_tokens": 1},
     f"input_tokens={MAX_TOKEN_COUNT + 1}"),
    ("gemini-string", f"{GEMINI_PATH}:generateContent", GEMINI, {"promptTokenCount": "12", "candidatesTokenCount": 3},
     "promptTokenCount='12'"),
    ("gemini-stream-negative", f"{GEMINI_PATH}:streamGenerateContent?alt=sse", GEMINI,
     {"promptTokenCount": 12, "candidatesTokenCount": -3}, "candidatesTokenCount=-3"),
]


def _raw(usage: dict[str, object], **extra: str) -> dict[str, str]:
    return {"X-Mock-Raw-Usage": json.dumps(usage), **extra}  # json: orjson stops at 64-bit integers


def assert_invalid(row: dict, shown: str) -> None:
    assert row["usage_source"] == "invalid"
    assert row["error_message"].startswith("invalid usage reported by the upstream: ")
    assert shown in row["error_message"], row["error_message"]
    tokens = ("input_tokens", "output_tokens", "cached_tokens", "cache_creation_tokens", "cache_creation_1h_tokens",
              "reasoning_tokens", "web_search_requests")
    assert [row[c] for c in tokens] == [0] * len(tokens)
    assert (row["input_cost"], row["output_cost"], row["total_cost"]) == (None, None, None)


@pytest.mark.parametrize(("name", "path", "body", "usage", "shown"), BAD, ids=[b[0] for b in BAD])
async def test_usage_that_is_not_usage_is_recorded_invalid(gateway: GatewayProcess, name: str, path: str,
                                                           body: dict, usage: dict[str, object], shown: str) -> None:
    response, answer = await post(gateway, path, body, _raw(usage))
    assert response.status == 200 and answer  # read whole: a cut body would have raised
    row = await gateway.row(response.headers["X-Majordomo-Request-Id"])
    assert row["status_code"] == 200 and row["aborted"] is False
    assert_invalid(row, shown)


async def test_the_largest_count_allowed_is_reported_and_priced(gateway: GatewayProcess) -> None:
    response, _ = await post(gateway, "/v1/messages", MESSAGES,
                             _raw({"input_tokens": MAX_TOKEN_COUNT, "output_tokens": 7.0}))
    row = await gateway.row(response.headers["X-Majordomo-Request-Id"])
    assert (row["usage_source"], row["input_tokens"], row["output_tokens"]) == ("reported", MAX_TOKEN_COUNT, 7)
    assert row["total_cost"] is not None


# -- the anthropic-openai translation ------------------------------------------------------------

@pytest.fixture
async def translated(gateway: GatewayProcess) -> AsyncIterator[openai.AsyncOpenAI]:
    sdk = openai.AsyncOpenAI(base_url=gateway.url + "/v1", api_key="sk-ant-test-invalid", max_retries=0, timeout=10,
                             default_headers={"X-Majordomo-Key": gateway.key,
                                              "X-Majordomo-Provider": "anthropic-openai"})
    yield sdk
    await sdk.close()


ODD = {"X-Mock-Stop-Reason": "[]", **_raw({"input_tokens": 10, "output_tokens": 1e300})}


async def test_the_translation_survives_odd_answers(gateway: GatewayProcess, translated: openai.AsyncOpenAI) -> None:
    raw = await translated.chat.completions.with_raw_response.create(
        model="claude-sonnet-4-20250514", messages=[{"role": "user", "content": "Hi"}], extra_headers=ODD)
    completion = raw.parse()
    assert completion.choices[0].message.content == DEFAULT_TEXT
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is None  # not a count the gateway can vouch for
    row = await gateway.row(raw.headers["x-majordomo-request-id"])
    assert_invalid(row, "output_tokens=1e+300")


async def test_the_translated_stream_survives_odd_answers(gateway: GatewayProcess,
                                                          translated: openai.AsyncOpenAI) -> None:
    stream = await translated.chat.completions.create(
        model="claude-sonnet-4-20250514", messages=[{"role": "user", "content": "Hi"}], stream=True,
        stream_options={"include_usage": True}, extra_headers=ODD)
    chunks = [chunk async for chunk in stream]
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == DEFAULT_TEXT
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["stop"]
    assert all(c.usage is None for c in chunks)
    row = await gateway.row(stream.response.headers["x-majordomo-request-id"])
    assert row["aborted"] is False
    assert_invalid(row, "output_tokens=1e+300")


# -- costs the columns cannot hold ---------------------------------------------------------------

@pytest.fixture(params=["sqlite", "postgres"])
async def overpriced(request: pytest.FixtureRequest, mock_upstream: MockUpstream,
                     tmp_path: Path) -> AsyncIterator[GatewayProcess]:
    """A gateway whose overrides price a model at $10^8 per million tokens."""
    prices = tmp_path / "prices.yaml"
    prices.write_text("models:\n  - provider: openai\n    model: gpt-overpriced\n"
                      "    prices: {input_mtok: 100000000, output_mtok: 1}\n")
    sqlite = f"sqlite:///{tmp_path / 'm.db'}"
    url = sqlite if request.param == "sqlite" else request.getfixturevalue("postgres").create()
    process = GatewayProcess(database_url=url, upstream_url=mock_upstream.url, workdir=tmp_path,
                             extra_env={"MAJORDOMO_PRICING_OVERRIDES_FILE": str(prices)}).start()
    yield process
    process.stop()


async def test_a_cost_the_columns_cannot_hold_is_invalid_on_both_databases(overpriced: GatewayProcess) -> None:
    body = {**CHAT, "model": "gpt-overpriced"}
    # 10^8 tokens at $10^8 per million: $10^10, one digit too many for NUMERIC(20, 10).
    too_much, _ = await post(overpriced, "/v1/chat/completions", body,
                             {"X-Mock-Usage": '{"input_tokens": 100000000, "output_tokens": 1}'})
    # One token less than 10^4 costs $999,900: kept.
    fine, _ = await post(overpriced, "/v1/chat/completions", body,
                         {"X-Mock-Usage": '{"input_tokens": 9999, "output_tokens": 1}'})
    assert too_much.status == fine.status == 200
    row = await overpriced.row(too_much.headers["X-Majordomo-Request-Id"])
    assert row["usage_source"] == "invalid" and row["total_cost"] is None and row["input_tokens"] == 0
    assert row["error_message"].startswith("cost 10000000000")
    assert "does not fit the cost columns" in row["error_message"]
    kept = await overpriced.row(fine.headers["X-Majordomo-Request-Id"])
    assert (kept["usage_source"], kept["input_tokens"]) == ("reported", 9999)
    assert float(kept["total_cost"]) == pytest.approx(999_900.000001)
