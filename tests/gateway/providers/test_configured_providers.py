"""OpenAI-, Anthropic- and Gemini-compatible upstreams named in configuration (providers.<name>)."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from pathlib import Path

import anthropic
import openai
import pytest

from tests.support import GatewayProcess
from tests.support.upstream import MockUpstream

OVERRIDES = """
models:
  - provider: local
    model: llama3.2
    prices: {input_mtok: 1, output_mtok: 2}
"""


@pytest.fixture
async def configured(mock_upstream: MockUpstream, tmp_path: Path) -> AsyncIterator[GatewayProcess]:
    overrides = tmp_path / "prices.yaml"
    overrides.write_text(OVERRIDES)
    env = {
        # An Ollama/vLLM-style server: its API root includes /v1.
        "MAJORDOMO_PROVIDERS_LOCAL_KIND": "openai",
        "MAJORDOMO_PROVIDERS_LOCAL_BASE_URL": f"{mock_upstream.url}/v1",
        # A hosted OpenAI-compatible API priced as OpenAI prices the same model names.
        "MAJORDOMO_PROVIDERS_RESELLER_KIND": "openai",
        "MAJORDOMO_PROVIDERS_RESELLER_BASE_URL": f"{mock_upstream.url}/v1",
        "MAJORDOMO_PROVIDERS_RESELLER_PRICING_PROVIDER": "openai",
        "MAJORDOMO_PROVIDERS_CLAUDE_RELAY_KIND": "anthropic",
        "MAJORDOMO_PROVIDERS_CLAUDE_RELAY_BASE_URL": mock_upstream.url,
        "MAJORDOMO_PRICING_OVERRIDES_FILE": str(overrides),
    }
    process = GatewayProcess(database_url=f"sqlite:///{tmp_path / 'db.sqlite'}", upstream_url=mock_upstream.url,
                             workdir=tmp_path, extra_env=env).start()
    yield process
    process.stop()


def _openai(gateway: GatewayProcess, provider: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=gateway.url + "/v1", api_key="sk-local-0123456789", max_retries=0,
                              default_headers={"X-Majordomo-Key": gateway.key, "X-Majordomo-Provider": provider})


async def test_openai_compatible_server_by_name(configured: GatewayProcess, mock_upstream: MockUpstream) -> None:
    mock_upstream.clear()
    client = _openai(configured, "local")
    raw = await client.chat.completions.with_raw_response.create(
        model="llama3.2", messages=[{"role": "user", "content": "Hi"}])
    await client.close()
    completion = raw.parse()
    [seen] = mock_upstream.requests
    # <base_url>/<rest>: the client's /v1 is the base URL's /v1, not added twice.
    assert seen.path == "/v1/chat/completions"
    row = await configured.row(raw.headers["x-majordomo-request-id"])
    assert (row["provider"], row["route"], row["model"]) == ("local", "local", "llama3.2")
    assert row["usage_source"] == "reported"
    assert row["input_tokens"] == completion.usage.prompt_tokens
    assert row["output_tokens"] == completion.usage.completion_tokens
    # Priced by the overrides file entry for provider "local".
    expected = (completion.usage.prompt_tokens * 1 + completion.usage.completion_tokens * 2) / 1_000_000
    assert float(row["total_cost"]) == pytest.approx(expected)


async def test_stream_usage_is_read_as_for_its_kind(configured: GatewayProcess) -> None:
    client = _openai(configured, "local")
    raw = await client.chat.completions.with_raw_response.create(
        model="llama3.2", messages=[{"role": "user", "content": "Hi"}], stream=True)
    chunks = [chunk async for chunk in raw.parse()]
    await client.close()
    # The gateway asked for usage (stream_options) and hid the extra chunk, as on the openai route.
    assert all(chunk.usage is None for chunk in chunks)
    row = await configured.row(raw.headers["x-majordomo-request-id"])
    assert row["streamed"] and row["usage_source"] == "reported" and row["output_tokens"] > 0


async def test_unpriced_model_is_flagged_and_pricing_provider_prices(configured: GatewayProcess) -> None:
    client = _openai(configured, "local")
    raw = await client.chat.completions.with_raw_response.create(
        model="gpt-4o", messages=[{"role": "user", "content": "Hi"}])
    row = await configured.row(raw.headers["x-majordomo-request-id"])
    # "local" has no pricing_provider: a model the overrides do not name is unpriced, not $0.
    assert row["total_cost"] is None and not row["model_alias_found"] and row["input_tokens"] > 0
    await client.close()

    client = _openai(configured, "reseller")
    raw = await client.chat.completions.with_raw_response.create(
        model="gpt-4o", messages=[{"role": "user", "content": "Hi"}])
    await client.close()
    row = await configured.row(raw.headers["x-majordomo-request-id"])
    assert row["provider"] == "reseller"
    assert row["model_alias_found"] and row["total_cost"] is not None and float(row["total_cost"]) > 0


async def test_anthropic_compatible_server(configured: GatewayProcess, mock_upstream: MockUpstream) -> None:
    mock_upstream.clear()
    client = anthropic.AsyncAnthropic(base_url=configured.url, api_key="sk-ant-relay-0123456789", max_retries=0,
                                      default_headers={"X-Majordomo-Key": configured.key,
                                                       "X-Majordomo-Provider": "claude_relay"})
    raw = await client.messages.with_raw_response.create(
        model="claude-sonnet-4-5", max_tokens=64, messages=[{"role": "user", "content": "Hi"}])
    await client.close()
    [seen] = mock_upstream.requests
    assert seen.path == "/v1/messages"
    sent = {k.lower(): v for k, v in seen.headers.items()}
    # Recent SDKs send the key as a bearer token, older ones as x-api-key: either is passed on.
    assert "sk-ant-relay-0123456789" in (sent.get("x-api-key"), sent.get("authorization", "").removeprefix("Bearer "))
    row = await configured.row(raw.headers["x-majordomo-request-id"])
    assert (row["provider"], row["route"]) == ("claude_relay", "claude_relay")
    assert row["provider_api_key_hash"] == hashlib.sha256(b"sk-ant-relay-0123456789").hexdigest()
    assert row["usage_source"] == "reported" and row["input_tokens"] > 0


async def test_unknown_provider_error_lists_configured_ones(configured: GatewayProcess) -> None:
    client = _openai(configured, "nope")
    with pytest.raises(openai.BadRequestError, match="local") as caught:
        await client.chat.completions.create(model="m", messages=[{"role": "user", "content": "Hi"}])
    await client.close()
    assert "claude_relay" in str(caught.value)
