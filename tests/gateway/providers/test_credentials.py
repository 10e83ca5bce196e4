"""Where each provider's SDKs put the caller's key, and the stored key put in the same place."""

from __future__ import annotations

from urllib.parse import parse_qsl

from majordomo_gateway.providers.anthropic import AnthropicProvider
from majordomo_gateway.providers.gemini import GeminiProvider
from majordomo_gateway.providers.openai import OpenAIProvider

PROXY = "mdm_pk_abc"
REAL = "sk-real/with+odd&chars="


def test_openai_bearer_is_replaced_and_nothing_else_changes() -> None:
    provider = OpenAIProvider("openai")
    headers = [("content-type", "application/json"), ("authorization", f"Bearer {PROXY}"), ("x-other", PROXY)]
    assert provider.credential({"authorization": f"Bearer {PROXY}"}, {}) == PROXY
    swapped, query = provider.with_credential(headers, b"api-version=1", REAL)
    assert swapped == [("content-type", "application/json"), ("authorization", f"Bearer {REAL}"), ("x-other", PROXY)]
    assert query == b"api-version=1"


def test_anthropic_x_api_key_and_bearer() -> None:
    provider = AnthropicProvider("anthropic")
    swapped, _ = provider.with_credential([("x-api-key", PROXY), ("anthropic-version", "2023-06-01")], b"", REAL)
    assert swapped == [("x-api-key", REAL), ("anthropic-version", "2023-06-01")]
    swapped, _ = provider.with_credential([("Authorization", f"Bearer {PROXY}")], b"", REAL)
    assert swapped == [("Authorization", f"Bearer {REAL}")]


def test_gemini_header_and_query_string() -> None:
    provider = GeminiProvider("gemini")
    assert provider.credential({}, {"key": PROXY}) == PROXY
    swapped, query = provider.with_credential([("x-goog-api-key", PROXY)], b"alt=sse&key=" + PROXY.encode(), REAL)
    assert swapped == [("x-goog-api-key", REAL)]
    assert parse_qsl(query.decode()) == [("alt", "sse"), ("key", REAL)]
    # a parameter that merely ends in "key" is not the key
    _, query = provider.with_credential([], b"monkey=1&key=x", REAL)
    assert parse_qsl(query.decode()) == [("monkey", "1"), ("key", REAL)]
    assert provider.with_credential([], b"", REAL) == ([], b"")
