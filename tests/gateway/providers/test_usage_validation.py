"""Every provider's usage reading refuses counts that are not counts, whole, with what was wrong."""

from __future__ import annotations

from collections.abc import Callable

import orjson
import pytest
from majordomo_gateway.providers.anthropic import usage_from_anthropic
from majordomo_gateway.providers.base import RequestInfo
from majordomo_gateway.providers.gemini import usage_from_gemini
from majordomo_gateway.providers.openai import usage_from_openai
from majordomo_gateway.providers.registry import PROVIDERS
from majordomo_gateway.usage import MAX_TOKEN_COUNT, InvalidUsage, Usage


@pytest.mark.parametrize(("read", "usage", "bad"), [
    (usage_from_openai, {"prompt_tokens": -1, "completion_tokens": 2}, {"prompt_tokens": -1}),
    (usage_from_openai, {"input_tokens": 1, "output_tokens": 2, "output_tokens_details": {"reasoning_tokens": 1.5}},
     {"output_tokens_details.reasoning_tokens": 1.5}),
    (usage_from_openai, {"prompt_tokens": 1, "completion_tokens": 2,
                         "completion_tokens_details": {"reasoning_tokens": 1}, "total_tokens": "4"},
     {"total_tokens": "4"}),
    (usage_from_anthropic, {"input_tokens": 1, "output_tokens": True, "server_tool_use": {"web_search_requests": -2}},
     {"output_tokens": True, "server_tool_use.web_search_requests": -2}),
    (usage_from_anthropic, {"input_tokens": 1, "cache_creation": {"ephemeral_1h_input_tokens": 2**63}},
     {"cache_creation.ephemeral_1h_input_tokens": 2**63}),
    (usage_from_gemini, {"promptTokenCount": 1e300, "thoughtsTokenCount": [1]},
     {"thoughtsTokenCount": [1], "promptTokenCount": 1e300}),
])
def test_counts_that_are_not_counts_are_refused(read: Callable[[dict], Usage], usage: dict, bad: dict) -> None:
    with pytest.raises(InvalidUsage) as caught:
        read(usage)
    assert caught.value.values == bad


def test_whole_numbers_within_the_bound_are_counts() -> None:
    assert usage_from_openai({"prompt_tokens": 12.0, "completion_tokens": MAX_TOKEN_COUNT}) == Usage(12,
                                                                                                    MAX_TOKEN_COUNT)
    assert usage_from_anthropic({"input_tokens": None, "output_tokens": 3}) == Usage(0, 3)


CASES = [
    ("openai", "/v1/chat/completions", {"usage": {"prompt_tokens": 5, "completion_tokens": -7}},
     b'data: {"choices":[],"usage":{"prompt_tokens":5,"completion_tokens":-7}}\n\ndata: [DONE]\n\n'),
    ("anthropic", "/v1/messages", {"type": "message", "model": "c", "usage": {"input_tokens": "5", "output_tokens": 1}},
     b'event: message_start\ndata: {"type":"message_start","message":{"model":"c","usage":{"input_tokens":"5"}}}\n\n'
     b'event: message_delta\ndata: {"type":"message_delta","usage":{"output_tokens":1}}\n\n'),
    ("gemini", "/v1beta/models/g:generateContent",
     {"usageMetadata": {"promptTokenCount": 5, "candidatesTokenCount": 1e300}},
     b'data: {"usageMetadata":{"promptTokenCount":5,"candidatesTokenCount":1e300}}\r\n\r\n'),
]


@pytest.mark.parametrize(("name", "path", "body", "stream"), CASES, ids=[c[0] for c in CASES])
def test_bodies_and_streams_with_invalid_usage_say_so(name: str, path: str, body: dict, stream: bytes) -> None:
    provider = PROVIDERS[name]
    parsed = provider.parse_response(path, orjson.dumps(body))
    parser = provider.stream_parser(path.replace("generateContent", "streamGenerateContent?alt=sse"), RequestInfo())
    parser.feed(stream)
    streamed = parser.finish()
    for result in (parsed, streamed):
        assert result.usage is None
        assert result.invalid_usage is not None
        assert result.invalid_usage.startswith("invalid usage reported by the upstream: ")
